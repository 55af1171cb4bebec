//! What the module records: the checks of a forward and a backward (which SyncBN also asks of
//! every rank before its exchange), and its `Recordable` implementation, which the call
//! descriptions run; and what a SyncBN call adds to the next recorded call.

use super::BatchNorm;
use crate::device::Context;
use crate::error::{Error, Result};
use crate::functional::{ForwardWork, GlobalStats, MergedStats};
use crate::module::{GradOutputs, Gradients, Recordable, Saved};
use crate::tensor::Tensor;

/// What a SyncBN call (`crate::syncbn`) adds to the module's next recorded call: the group's
/// statistics for a training forward, the group's backward coefficients for a backward.
#[derive(Debug, Default)]
pub(crate) struct GroupInputs {
    /// The statistics merged over the group, and a `[C]` tensor for their M2: the forward
    /// writes the mean and invstd into its saved statistics (which its backward reads), M2
    /// into the tensor, and normalizes and updates the running statistics with them. The
    /// rank's own batch may then hold a single value per channel.
    pub stats: Option<(MergedStats, Tensor)>,
    /// `[2C]` `(sum(dz) / n, sum(dz * xhat) / n)` over the group, for grad_input.
    pub coefficients: Option<Tensor>,
}

/// The checks of a call, apart from its recording: what SyncBN (`crate::syncbn`) asks of every
/// rank before the exchange, and what the recorded calls run first.
impl BatchNorm {
    /// Every check of a forward of `x` (+ `residual`) into `y`, PyTorch's and the functional
    /// layer's; `group` is the group's M2 tensor and count where SyncBN gives the statistics
    /// (the M2 tensor stands in for their mean and invstd until the statistics buffers are
    /// picked: same shape and type, the same outcome).
    pub(crate) fn check_forward_call(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        y: &Tensor,
        group: Option<(&Tensor, u64)>,
    ) -> Result<ForwardWork> {
        self.check_input(x, group.is_some())?;
        let mut probe = self.state.forward_args(
            &self.options,
            self.training,
            x,
            y,
            None,
            (self.activation, residual),
        );
        probe.global_stats = group.map(|(m2, count)| GlobalStats {
            mean: m2,
            invstd: m2,
            m2,
            count,
        });
        self.functional.check_forward(&probe)
    }

    /// The module's own checks of the backward of `saved` into `outputs` (the functional
    /// layer checks its arguments as it records them).
    fn check_backward_module(
        &self,
        saved: &Saved,
        grad_output: &Tensor,
        outputs: GradOutputs<'_>,
    ) -> Result<()> {
        self.check_saved(saved, outputs.grad_weight, outputs.grad_bias)?;
        if outputs.grad_residual.is_some() && saved.residual.is_none() {
            return Err(Error::Backward(
                "grad_residual: the forward was given no residual".into(),
            ));
        }
        grad_output.expect_shape(
            "grad_output (must match the forward input)",
            saved.x.shape(),
        )
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// Every check of the backward of `saved` into `outputs`, recording nothing.
    pub(crate) fn check_backward_call(
        &self,
        saved: &Saved,
        grad_output: &Tensor,
        outputs: GradOutputs<'_>,
    ) -> Result<()> {
        self.check_backward_module(saved, grad_output, outputs)?;
        let args = self
            .state
            .backward_args(self.options.eps, saved, grad_output, outputs)?;
        self.functional.check_backward(&args).map(drop)
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// This rank's `sum(dz * xhat)` and `sum(dz)` per channel for the backward of `saved`,
    /// written to `sum_dz_xhat` and `sum_dz` (`[C]`), submitted and waited for.
    pub(crate) async fn backward_sums_async(
        &mut self,
        saved: &Saved,
        grad_output: &Tensor,
        sum_dz_xhat: &Tensor,
        sum_dz: &Tensor,
    ) -> Result<()> {
        let outputs = GradOutputs {
            grad_weight: Some(sum_dz_xhat),
            grad_bias: Some(sum_dz),
            ..GradOutputs::default()
        };
        // The functional arguments directly: the sums are wanted without `affine` too.
        let args = self
            .state
            .backward_args(self.options.eps, saved, grad_output, outputs)?;
        self.functional.run_async(&args).await
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// This rank's per-channel count, mean and M2 of `x`, read back.
    pub(crate) async fn local_stats_async(
        &mut self,
        x: &Tensor,
    ) -> Result<crate::functional::LocalStats> {
        self.functional.local_stats_async(x).await
    }
}

impl Recordable for BatchNorm {
    fn context(&self) -> &Context {
        &self.ctx
    }

    fn forward_output(&self, x: &Tensor) -> Result<Tensor> {
        Tensor::empty_of(&self.ctx, x.shape(), x.dtype(), x.memory_format())
    }

    /// Checks `x` and `y`, then records the forward into `encoder`; returns the handle for its
    /// backward. Nothing changes if a check fails.
    fn record_forward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        residual: Option<&Tensor>,
        y: &Tensor,
    ) -> Result<Saved> {
        let epilogue = (self.activation, residual);
        let group = self.group.stats.take();
        let work =
            self.check_forward_call(x, residual, y, group.as_ref().map(|(m, m2)| (m2, m.count)))?;
        let batch_stats = self.uses_batch_stats();
        // The group's statistics as the functional layer takes them.
        let global = |mean, invstd| {
            group.as_ref().map(|(m, m2)| GlobalStats {
                mean,
                invstd,
                m2,
                count: m.count,
            })
        };
        // Release this module's own references first, so steady-state calls reuse buffers;
        // `previous` remembers them, to be put back if recording fails.
        let previous = self.saved.release(batch_stats);
        let batch = if batch_stats {
            match self.saved.buffers(&self.ctx, self.num_features) {
                Ok(b) => Some(b),
                Err(e) => {
                    self.saved.restore(previous);
                    return Err(e);
                }
            }
        } else {
            None
        };
        let mut args = self.state.forward_args(
            &self.options,
            self.training,
            x,
            y,
            batch.as_deref(),
            epilogue,
        );
        if let (Some((merged, m2)), Some(b)) = (&group, batch.as_deref()) {
            // Through the queue: written before this call's commands run.
            let queue = self.ctx.queue();
            for (t, values) in [(&b.mean, &merged.mean), (&b.invstd, &merged.invstd)] {
                queue.write_buffer(t.buffer(), t.offset(), bytemuck::cast_slice(values));
            }
            queue.write_buffer(m2.buffer(), m2.offset(), bytemuck::cast_slice(&merged.m2));
            args.global_stats = global(&b.mean, &b.invstd);
        }
        if let Err(e) = self
            .functional
            .encode_checked_forward(encoder, &args, &work)
        {
            // Nothing was submitted: the previous forward's statistics are intact.
            self.saved.restore(previous);
            return Err(e);
        }
        if batch.is_some() {
            self.saved.last_batch = batch.clone();
        }
        let saved = Saved {
            module: self.id,
            x: x.clone(),
            batch,
            training: self.training,
            version: self.version,
            activation: self.activation,
            residual: residual.cloned(),
        };
        self.saved.last_forward = Some(saved.clone());
        Ok(saved)
    }

    fn forget_forward(&mut self) {
        self.saved.forget();
    }

    fn last_forward(&self) -> Result<Saved> {
        self.saved.last_forward.clone().ok_or_else(|| {
            Error::Backward("no forward to differentiate: call forward first".into())
        })
    }

    fn backward_outputs(&self, saved: &Saved) -> Result<Gradients> {
        let like =
            |t: &Tensor| Tensor::empty_of(&self.ctx, t.shape(), t.dtype(), t.memory_format());
        let c = self.num_features;
        let param = || {
            self.options
                .affine
                .then(|| Tensor::empty(&self.ctx, &[c]))
                .transpose()
        };
        Ok(Gradients {
            grad_input: like(&saved.x)?,
            grad_weight: param()?,
            grad_bias: param()?,
            grad_residual: saved.residual.as_ref().map(like).transpose()?,
        })
    }

    /// Checks the backward of `saved` (into `outputs`), then records it into `encoder`.
    /// Nothing changes if a check fails.
    fn record_backward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        saved: &Saved,
        grad_output: &Tensor,
        outputs: GradOutputs<'_>,
    ) -> Result<()> {
        self.check_backward_module(saved, grad_output, outputs)?;
        let coefficients = self.group.coefficients.take();
        let mut args = self
            .state
            .backward_args(self.options.eps, saved, grad_output, outputs)?;
        args.global_coefficients = coefficients.as_ref();
        self.functional.encode_backward(encoder, &args)
    }
}
