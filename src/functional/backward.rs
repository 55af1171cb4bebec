//! The backward: the single-dispatch or multi-pass plan the planner picks, recorded.

use crate::error::Result;
use crate::ops::backward_finalize::BackwardFinalizeBindings;
use crate::ops::backward_input::BackwardInputBindings;
use crate::ops::backward_reduce::BackwardReduceBindings;
use crate::ops::backward_single::{
    BackwardSingleBindings, BackwardSingleEpilogueBindings, BackwardSingleTensors,
};
use crate::ops::channel_affine::ChannelAffineBindings;
use crate::ops::convert::Direction;
use crate::ops::forward_single::SingleParams;
use crate::ops::{Activation, ChannelTensor, Statistics};
use crate::planner::CallKind;
use crate::tensor::Tensor;
use crate::workspace::Geometry;

use super::validate::*;
use super::*;

/// The single-dispatch backward: without an epilogue, or through it.
enum SingleBackward {
    Plain(BackwardSingleBindings),
    Epilogue(BackwardSingleEpilogueBindings),
}

impl Functional {
    /// Whether (and how) the backward runs in one dispatch: this batch's statistics (not running
    /// ones, not SyncBN's global coefficients), the planner's choice, and through an epilogue
    /// only where the device has the epilogue kernel's 11 storage buffers.
    pub(super) fn single_backward_plan(
        &self,
        a: &BackwardArgs<'_>,
        w: &BackwardWork,
    ) -> Option<(ChannelTensor, Geometry)> {
        let g = w.geometry?;
        if !matches!(a.stats, SavedStats::Batch { .. })
            || w.statistics != Statistics::Batch
            || a.global_coefficients.is_some()
        {
            return None;
        }
        let activation = a.activation != Activation::Identity;
        let tensors = [
            Some(a.x),
            Some(a.grad_output),
            a.grad_input,
            a.residual,
            a.grad_residual,
        ];
        let residual = w.through_epilogue && !activation;
        self.single_plan(g, (CallKind::Backward, (activation, residual)), &tensors)
    }

    /// The single-dispatch backward's bindings, where `single_backward_plan` takes it.
    fn single_backward(
        &mut self,
        a: &BackwardArgs<'_>,
        w: &BackwardWork,
    ) -> Option<(SingleBackward, ChannelTensor, u32)> {
        let (how, g) = self.single_backward_plan(a, w)?;
        let SavedStats::Batch {
            save_mean,
            save_invstd,
        } = a.stats
        else {
            return None;
        };
        let epilogue = a.activation != Activation::Identity || w.through_epilogue;
        let shape = self
            .ws
            .single_params(SingleParams::new((g.n, g.c, g.s), w.count, w.eps, how));
        let tensors = BackwardSingleTensors {
            shape,
            x: a.x.slot(),
            dy: a.grad_output.slot(),
            dx: a.grad_input.map(Tensor::slot),
            mean: save_mean.slot(),
            spread: save_invstd.slot(),
            weight: a.weight.map(Tensor::slot),
            grad_weight: a.grad_weight.map(Tensor::slot),
            grad_bias: a.grad_bias.map(Tensor::slot),
        };
        let op = if epilogue {
            // The pre-activation is rebuilt only where the activation needs it.
            let rebuild = a.activation != Activation::Identity;
            SingleBackward::Epilogue(BackwardSingleEpilogueBindings::new(
                tensors,
                a.bias.map(Tensor::slot),
                a.residual.filter(|_| rebuild).map(Tensor::slot),
                a.grad_residual.map(Tensor::slot),
            ))
        } else {
            SingleBackward::Plain(BackwardSingleBindings::new(tensors))
        };
        Some((op, how, g.c))
    }

    fn record_backward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        a: &BackwardArgs<'_>,
        w: &BackwardWork,
    ) {
        let Some(g) = w.geometry else {
            // No values: the parameter gradients are sums over nothing.
            for t in [a.grad_weight, a.grad_bias].into_iter().flatten() {
                if w.c > 0 {
                    encoder.clear_buffer(t.buffer(), t.offset(), Some(t.size_bytes()));
                }
            }
            return;
        };
        if let Some((op, how, c)) = self.single_backward(a, w) {
            let max_grid = self.ctx.limits().max_grid;
            let epilogue = w.epilogue;
            self.ws
                .record(encoder, "batchnorm backward", |rec| match &op {
                    SingleBackward::Plain(op) => op.encode(rec, how, c, max_grid),
                    SingleBackward::Epilogue(op) => op.encode(rec, how, epilogue, c, max_grid),
                });
            return;
        }
        let ws = &mut self.ws;
        let (mean, spread) = match a.stats {
            SavedStats::Batch {
                save_mean,
                save_invstd,
            } => (save_mean, save_invstd),
            SavedStats::Running {
                running_mean,
                running_var,
                ..
            } => (running_mean, running_var),
        };
        let batch = w.statistics == Statistics::Batch;
        let own_coefficients = batch && a.grad_input.is_some() && a.global_coefficients.is_none();
        let sums_needed = own_coefficients || a.grad_weight.is_some() || a.grad_bias.is_some();
        let prepared = ws.plan(g);
        let plan = &prepared.plan;
        let chan = ws.channel_params(w.c, plan.total_tasks, w.count, w.eps);
        let coef = ws.scratch("coef", u64::from(w.c) * 8);
        // Through an activation, backward_reduce rebuilds the pre-activation from the
        // forward's per-channel coefficients and writes dz = dy * act'(z) (grad_residual, or
        // scratch that backward_input reads in place of dy).
        let rebuild = a.activation != Activation::Identity;
        let affine_out = rebuild.then(|| ws.scratch("affine", u64::from(w.c) * 8));
        let affine = affine_out.clone().map(|out| ChannelAffineBindings {
            chan: chan.clone(),
            mean: mean.slot(),
            spread: spread.slot(),
            weight: a.weight.map(Tensor::slot),
            bias: a.bias.map(Tensor::slot),
            affine: Some(out),
            fold_scale: None,
            fold_shift: None,
        });
        let dz = if w.through_epilogue {
            a.grad_residual.map(Tensor::slot).or_else(|| {
                a.grad_input
                    .is_some()
                    .then(|| ws.scratch("dz", a.x.size_bytes()))
            })
        } else {
            None
        };
        let reduce = (sums_needed || dz.is_some()).then(|| BackwardReduceBindings {
            x: a.x.slot(),
            dy: a.grad_output.slot(),
            mean: mean.slot(),
            partials: ws.partials(plan),
            affine: affine_out,
            residual: a.residual.filter(|_| rebuild).map(Tensor::slot),
            dz: dz.clone(),
        });
        let finalize = sums_needed.then(|| BackwardFinalizeBindings {
            chan: chan.clone(),
            partials: ws.partials(plan),
            spread: spread.slot(),
            grad_weight: a.grad_weight.map(Tensor::slot),
            grad_bias: a.grad_bias.map(Tensor::slot),
            coef: coef.clone(),
        });
        let input = a.grad_input.map(|dx| BackwardInputBindings {
            chan,
            x: a.x.slot(),
            dy: dz.clone().unwrap_or_else(|| a.grad_output.slot()),
            dx: dx.slot(),
            mean: mean.slot(),
            spread: spread.slot(),
            weight: a.weight.map(Tensor::slot),
            coef: a
                .global_coefficients
                .map(Tensor::slot)
                .or(batch.then_some(coef)),
        });
        let (statistics, epilogue) = (w.statistics, w.epilogue);
        ws.record(encoder, "batchnorm backward", |rec| {
            if let Some(affine) = &affine {
                affine.encode(rec, statistics);
            }
            if let Some(reduce) = &reduce {
                reduce.encode(rec, &prepared, epilogue);
            }
            if let Some(finalize) = &finalize {
                finalize.encode(rec, prepared.plan.channel_grid, statistics);
            }
            if let Some(input) = &input {
                input.encode(rec, &prepared, statistics);
            }
        });
    }

    /// Checks the backward and records it into `encoder`: no submit, no wait.
    pub(crate) fn encode_backward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        args: &BackwardArgs<'_>,
    ) -> Result<()> {
        let work = self.check_backward(args)?;
        self.encode_checked_backward(encoder, args, &work)
    }

    /// The backward of a call `work` says passed the checks.
    fn encode_checked_backward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        args: &BackwardArgs<'_>,
        work: &BackwardWork,
    ) -> Result<()> {
        if !work.copies {
            self.record_backward(encoder, args, work);
            return Ok(());
        }
        // f16: as in the forward, f32 copies in, f16 gradients out.
        let a = args;
        let x32 = self.f32_copy("f16 input", a.x)?;
        let dy32 = self.f32_copy("f16 grad_output", a.grad_output)?;
        let copy = |f: &mut Self, purpose, t: Option<&Tensor>| {
            t.map(|t| f.f32_copy(purpose, t)).transpose()
        };
        let r32 = copy(self, "f16 residual", a.residual)?;
        let dx32 = copy(self, "f16 grad_input", a.grad_input)?;
        let dr32 = copy(self, "f16 grad_residual", a.grad_residual)?;
        let args32 = BackwardArgs {
            x: &x32,
            grad_output: &dy32,
            residual: r32.as_ref(),
            grad_input: dx32.as_ref(),
            grad_residual: dr32.as_ref(),
            ..*a
        };
        let work = work.on_f32_copies();
        self.record_convert(encoder, a.x, &x32, Direction::ToF32);
        self.record_convert(encoder, a.grad_output, &dy32, Direction::ToF32);
        if let (Some(r), Some(r32)) = (a.residual, &r32) {
            self.record_convert(encoder, r, r32, Direction::ToF32);
        }
        self.record_backward(encoder, &args32, &work);
        for (half, single) in [(a.grad_input, &dx32), (a.grad_residual, &dr32)] {
            if let (Some(half), Some(single)) = (half, single) {
                self.record_convert(encoder, half, single, Direction::ToF16);
            }
        }
        Ok(())
    }
}

impl Call for BackwardArgs<'_> {
    fn record(&self, f: &mut Functional, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        f.encode_backward(encoder, self)
    }
}
