//! The forward: the single-dispatch or multi-pass plan the planner picks, recorded.

use crate::error::Result;
use crate::ops::convert::Direction;
use crate::ops::finalize_stats::FinalizeStatsBindings;
use crate::ops::forward_single::{
    ForwardSingleBindings, ForwardSingleTensors, ForwardSingleUpdateBindings, SingleParams,
};
use crate::ops::normalize::NormalizeBindings;
use crate::ops::stats::StatsBindings;
use crate::ops::update_running::UpdateRunningBindings;
use crate::ops::{Activation, ChannelTensor, Specialize, Statistics};
use crate::planner::{self, CallDesc, CallKind};
use crate::tensor::Tensor;
use crate::workspace::Geometry;

use super::validate::*;
use super::*;

/// The single-dispatch forward: alone, or with the running update in the same dispatch.
enum SingleForward {
    Plain(ForwardSingleBindings),
    WithUpdate(ForwardSingleUpdateBindings),
}

impl Functional {
    fn record_forward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        a: &ForwardArgs<'_>,
        w: &ForwardWork,
    ) {
        let ws = &mut self.ws;
        let channel_bytes = u64::from(w.c) * 4;
        let save_mean = a
            .save_mean
            .map(Tensor::slot)
            .unwrap_or_else(|| ws.scratch("save_mean", channel_bytes));
        let save_invstd = a
            .save_invstd
            .map(Tensor::slot)
            .unwrap_or_else(|| ws.scratch("save_invstd", channel_bytes));
        let m2 = ws.scratch("m2", channel_bytes);
        let single = self.single_pass(a, w);
        let ws = &mut self.ws;
        // The statistics the normalize reads: this batch's (written first), or running ones.
        let (mean, spread) = match (&a.running, w.statistics, &a.global_stats) {
            (_, _, Some(g)) => (g.mean.slot(), g.invstd.slot()),
            (Some(r), Statistics::Running, _) => (r.mean.slot(), r.var.slot()),
            _ => (save_mean.clone(), save_invstd.clone()),
        };
        // A training forward on the single plan updates the running statistics in its own
        // dispatch where it can (`planner::fuses_update`).
        let caps = self.ctx.caps();
        let fused_update = match (&single, w.update, &a.running) {
            (Some(_), Some(params), Some(r))
                if w.statistics == Statistics::Batch
                    && planner::fuses_update(
                        true,
                        params.cumulative == 0,
                        params.update_stats != 0,
                        &caps,
                    ) =>
            {
                Some((params, r))
            }
            _ => None,
        };
        let single = single.map(|(how, g)| {
            let params = SingleParams::new((g.n, g.c, g.s), w.count, w.eps, how);
            let shape = ws.single_params(params);
            let tensors = ForwardSingleTensors {
                shape,
                x: a.input.slot(),
                y: a.output.slot(),
                weight: a.weight.map(Tensor::slot),
                bias: a.bias.map(Tensor::slot),
                residual: a.residual.map(Tensor::slot),
                mean: mean.clone(),
                spread: spread.clone(),
            };
            let op = match fused_update {
                Some((update, r)) => SingleForward::WithUpdate(ForwardSingleUpdateBindings::new(
                    tensors,
                    ws.update_params(update),
                    r.mean.slot(),
                    r.var.slot(),
                    r.num_batches_tracked.map(|t| t.binding()),
                )),
                None => SingleForward::Plain(ForwardSingleBindings::new(tensors, m2.clone())),
            };
            (op, how, g.c)
        });
        let tensor_work = w.geometry.filter(|_| single.is_none()).map(|g| {
            let prepared = ws.plan(g);
            let plan = &prepared.plan;
            let chan = ws.channel_params(w.c, plan.total_tasks, w.count, w.eps);
            let stats =
                (w.statistics == Statistics::Batch && a.global_stats.is_none()).then(|| {
                    let partials = ws.partials(plan);
                    (
                        StatsBindings {
                            x: a.input.slot(),
                            partials: partials.clone(),
                        },
                        FinalizeStatsBindings {
                            chan: chan.clone(),
                            partials,
                            save_mean: save_mean.clone(),
                            save_invstd: save_invstd.clone(),
                            m2: m2.clone(),
                        },
                    )
                });
            let normalize = NormalizeBindings {
                chan,
                x: a.input.slot(),
                y: a.output.slot(),
                mean: mean.clone(),
                spread: spread.clone(),
                weight: a.weight.map(Tensor::slot),
                bias: a.bias.map(Tensor::slot),
                residual: a.residual.map(Tensor::slot),
            };
            (prepared, stats, normalize)
        });
        let update = match (w.update, &a.running) {
            (Some(params), Some(r)) if fused_update.is_none() => Some(UpdateRunningBindings {
                upd: ws.update_params(params),
                save_mean: a
                    .global_stats
                    .map_or_else(|| save_mean.clone(), |g| g.mean.slot()),
                m2: a.global_stats.map_or(m2, |g| g.m2.slot()),
                running_mean: r.mean.slot(),
                running_var: r.var.slot(),
                tracked: r.num_batches_tracked.map(|t| t.binding()),
            }),
            _ => None,
        };
        if tensor_work.is_none() && single.is_none() && update.is_none() {
            return;
        }
        let max_grid = self.ctx.limits().max_grid;
        let special = Specialize {
            statistics: w.statistics,
            epilogue: w.epilogue,
            to_f16: false,
            channel_tensor: None,
        };
        ws.record(encoder, "batchnorm forward", |rec| {
            match &single {
                Some((SingleForward::Plain(op), how, c)) => {
                    op.encode(rec, *how, (w.statistics, w.epilogue), *c, max_grid);
                }
                Some((SingleForward::WithUpdate(op), how, c)) => {
                    op.encode(rec, *how, w.epilogue, *c, max_grid);
                }
                None => {}
            }
            if let Some((prepared, stats, normalize)) = &tensor_work {
                if let Some((stats, finalize)) = stats {
                    stats.encode(rec, prepared);
                    finalize.encode(rec, prepared.plan.channel_grid);
                }
                normalize.encode(rec, prepared, special);
            }
            if let Some(update) = &update {
                update.encode(rec);
            }
        });
    }

    /// The single-dispatch plan of a forward, where the planner picks it and it can run: this
    /// batch's statistics (not SyncBN's global ones) or running ones (eval), and x, y and the
    /// residual each bound whole (within one binding, at an aligned offset).
    fn single_pass(
        &self,
        a: &ForwardArgs<'_>,
        w: &ForwardWork,
    ) -> Option<(ChannelTensor, Geometry)> {
        let g = w.geometry?;
        let eval = w.statistics == Statistics::Running;
        if a.global_stats.is_some() || (eval && a.running.is_none()) {
            return None;
        }
        let kind = if eval {
            CallKind::EvalForward
        } else {
            CallKind::TrainingForward
        };
        let epilogue = (a.activation != Activation::Identity, a.residual.is_some());
        self.single_plan(
            g,
            (kind, epilogue),
            &[Some(a.input), Some(a.output), a.residual],
        )
    }

    /// The planner's single-dispatch plan for a `kind` call (with an activation, a residual)
    /// on geometry `g`, whose `tensors` are bound whole where each fits one binding at an
    /// aligned offset.
    pub(super) fn single_plan(
        &self,
        g: Geometry,
        (kind, (activation, residual)): (CallKind, (bool, bool)),
        tensors: &[Option<&Tensor>],
    ) -> Option<(ChannelTensor, Geometry)> {
        let limits = self.ctx.limits();
        let whole = |t: &Tensor| {
            t.size_bytes() <= limits.max_binding && t.offset().is_multiple_of(limits.align)
        };
        let desc = CallDesc {
            geometry: (g.n, g.c, g.s),
            dtype: g.dtype,
            kind,
            activation,
            residual,
            aligned: g.vec4_ok,
            whole: tensors.iter().flatten().all(|t| whole(t)),
            running: false,
            momentum: false,
        };
        planner::single_dispatch(
            &desc,
            self.ctx.profile(),
            &self.ctx.caps(),
            self.ctx.forced_pass_plan(),
        )
        .map(|how| (how, g))
    }

    /// The forward of a call `work` says passed the checks (the module
    /// checks once, before it picks its statistics buffers; those do not change the checks'
    /// outcome).
    pub(crate) fn encode_checked_forward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        args: &ForwardArgs<'_>,
        work: &ForwardWork,
    ) -> Result<()> {
        // f32, and f16 where the adapter has SHADER_F16: the kernels load and store the
        // tensors' own type (f16 widened exactly on load, rounded once on store).
        if !work.copies {
            self.record_forward(encoder, args, work);
            return Ok(());
        }
        // f16: the f32 kernels on f32 copies, converted at the edges (statistics in f32, one
        // rounding of the output).
        let a = args;
        let x32 = self.f32_copy("f16 input", a.input)?;
        let y32 = self.f32_copy("f16 output", a.output)?;
        let r32 = a
            .residual
            .map(|r| self.f32_copy("f16 residual", r))
            .transpose()?;
        let args32 = ForwardArgs {
            input: &x32,
            output: &y32,
            residual: r32.as_ref(),
            ..*a
        };
        let work = work.on_f32_copies();
        self.record_convert(encoder, a.input, &x32, Direction::ToF32);
        if let (Some(r), Some(r32)) = (a.residual, &r32) {
            self.record_convert(encoder, r, r32, Direction::ToF32);
        }
        self.record_forward(encoder, &args32, &work);
        self.record_convert(encoder, a.output, &y32, Direction::ToF16);
        Ok(())
    }
}

impl Call for ForwardArgs<'_> {
    fn record(&self, f: &mut Functional, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let work = f.check_forward(self)?;
        f.encode_checked_forward(encoder, self, &work)
    }
}
