//! The module's parameters, buffers and saved statistics: PyTorch's attributes as getters and
//! setters (each getter's blocking form written once by `blocking!`), and the GPU tensors
//! themselves ([`ModuleTensors`]).

use super::BatchNorm;
use crate::device::blocking;
use crate::error::{Error, Result};
use crate::tensor::{BatchCounter, Tensor};

impl BatchNorm {
    blocking! {
        /// `module.weight` (None when `affine = false`).
        pub fn weight(&self) -> Result<Option<Vec<f32>>> = weight_async;
        /// `module.bias` (None when `affine = false`).
        pub fn bias(&self) -> Result<Option<Vec<f32>>> = bias_async;
        /// `module.running_mean` (None when `track_running_stats = false`).
        pub fn running_mean(&self) -> Result<Option<Vec<f32>>> = running_mean_async;
        /// `module.running_var` (None when `track_running_stats = false`).
        pub fn running_var(&self) -> Result<Option<Vec<f32>>> = running_var_async;
        /// `module.num_batches_tracked` (None when `track_running_stats = false`).
        pub fn num_batches_tracked(&self) -> Result<Option<u64>> = num_batches_tracked_async;
        /// The batch mean of the last forward that used batch statistics (PyTorch's `save_mean`;
        /// zeros before any).
        pub fn save_mean(&self) -> Result<Vec<f32>> = save_mean_async;
        /// `1 / sqrt(biased batch variance + eps)` of the last forward that used batch statistics
        /// (PyTorch's `save_invstd`; zeros before any).
        pub fn save_invstd(&self) -> Result<Vec<f32>> = save_invstd_async;
    }

    fn write_channels(
        &mut self,
        what: &str,
        t: Option<&Tensor>,
        option: &str,
        values: &[f32],
    ) -> Result<()> {
        let t = t.ok_or_else(|| {
            Error::NotAvailable(format!("{what}: the module has {option} = false"))
        })?;
        let c = self.num_features;
        if values.len() != c {
            return Err(Error::ShapeMismatch {
                what: what.to_string(),
                expected: vec![c],
                got: vec![values.len()],
            });
        }
        // Through the queue: ordered before the next submitted command buffer, including
        // one recorded earlier.
        if c > 0 {
            self.ctx.scoped(|| {
                self.ctx
                    .queue()
                    .write_buffer(t.buffer(), t.offset(), bytemuck::cast_slice(values));
                Ok(())
            })?;
        }
        self.version += 1;
        Ok(())
    }

    async fn read(t: Option<&Tensor>) -> Result<Option<Vec<f32>>> {
        match t {
            Some(t) => Ok(Some(t.to_host_async().await?)),
            None => Ok(None),
        }
    }

    /// Async form of [`BatchNorm::weight`].
    pub async fn weight_async(&self) -> Result<Option<Vec<f32>>> {
        Self::read(self.state.weight.as_ref()).await
    }

    /// Async form of [`BatchNorm::bias`].
    pub async fn bias_async(&self) -> Result<Option<Vec<f32>>> {
        Self::read(self.state.bias.as_ref()).await
    }

    /// Sets `module.weight` (C values).
    pub fn set_weight(&mut self, values: &[f32]) -> Result<()> {
        let t = self.state.weight.clone();
        self.write_channels("weight", t.as_ref(), "affine", values)
    }

    /// Sets `module.bias` (C values).
    pub fn set_bias(&mut self, values: &[f32]) -> Result<()> {
        let t = self.state.bias.clone();
        self.write_channels("bias", t.as_ref(), "affine", values)
    }

    /// Async form of [`BatchNorm::running_mean`].
    pub async fn running_mean_async(&self) -> Result<Option<Vec<f32>>> {
        Self::read(self.state.running.as_ref().map(|r| &r.mean)).await
    }

    /// Async form of [`BatchNorm::running_var`].
    pub async fn running_var_async(&self) -> Result<Option<Vec<f32>>> {
        Self::read(self.state.running.as_ref().map(|r| &r.var)).await
    }

    /// Sets `module.running_mean` (C values).
    pub fn set_running_mean(&mut self, values: &[f32]) -> Result<()> {
        let t = self.state.running.as_ref().map(|r| r.mean.clone());
        self.write_channels("running_mean", t.as_ref(), "track_running_stats", values)
    }

    /// Sets `module.running_var` (C values).
    pub fn set_running_var(&mut self, values: &[f32]) -> Result<()> {
        let t = self.state.running.as_ref().map(|r| r.var.clone());
        self.write_channels("running_var", t.as_ref(), "track_running_stats", values)
    }

    /// Async form of [`BatchNorm::num_batches_tracked`].
    pub async fn num_batches_tracked_async(&self) -> Result<Option<u64>> {
        match &self.state.running {
            Some(r) => Ok(Some(r.tracked.get_async().await?)),
            None => Ok(None),
        }
    }

    /// Sets `module.num_batches_tracked`.
    pub fn set_num_batches_tracked(&mut self, value: u64) -> Result<()> {
        match &self.state.running {
            Some(r) => r.tracked.set(value),
            None => Err(Error::NotAvailable(
                "num_batches_tracked: the module has track_running_stats = false".into(),
            )),
        }
    }

    /// `module.reset_running_stats()`: running_mean 0, running_var 1, num_batches_tracked 0.
    pub fn reset_running_stats(&mut self) -> Result<()> {
        if self.state.running.is_none() {
            return Ok(());
        }
        let c = self.num_features;
        self.set_running_mean(&vec![0.0; c])?;
        self.set_running_var(&vec![1.0; c])?;
        self.set_num_batches_tracked(0)
    }

    /// `module.reset_parameters()`: running stats reset, weight 1, bias 0.
    pub fn reset_parameters(&mut self) -> Result<()> {
        self.reset_running_stats()?;
        if self.options.affine {
            let c = self.num_features;
            self.set_weight(&vec![1.0; c])?;
            self.set_bias(&vec![0.0; c])?;
        }
        Ok(())
    }

    /// Async form of [`BatchNorm::save_mean`].
    pub async fn save_mean_async(&self) -> Result<Vec<f32>> {
        match &self.saved.last_batch {
            Some(b) => b.mean.to_host_async().await,
            None => Ok(vec![0.0; self.num_features]),
        }
    }

    /// Async form of [`BatchNorm::save_invstd`].
    pub async fn save_invstd_async(&self) -> Result<Vec<f32>> {
        match &self.saved.last_batch {
            Some(b) => b.invstd.to_host_async().await,
            None => Ok(vec![0.0; self.num_features]),
        }
    }

    /// The GPU tensors of the parameters, buffers and last saved statistics, for use in the
    /// caller's own kernels or with the functional API. Writing them directly bypasses the
    /// module's change tracking: call forward again before backward.
    pub fn tensors(&self) -> ModuleTensors<'_> {
        let running = self.state.running.as_ref();
        ModuleTensors {
            weight: self.state.weight.as_ref(),
            bias: self.state.bias.as_ref(),
            running_mean: running.map(|r| &r.mean),
            running_var: running.map(|r| &r.var),
            num_batches_tracked: running.map(|r| &r.tracked),
            save_mean: self.saved.last_batch.as_ref().map(|b| &b.mean),
            save_invstd: self.saved.last_batch.as_ref().map(|b| &b.invstd),
        }
    }

    /// How many GPU buffers the module has created since it was built, parameters excluded.
    pub(crate) fn buffers_made(&self) -> usize {
        self.functional.workspace().buffers_created() + self.saved.buffers_made() * 2
    }

    /// The functional layer under the module.
    pub(crate) fn functional(&self) -> &crate::functional::Functional {
        &self.functional
    }
}

/// The module's parameters, buffers and saved statistics as GPU tensors; see
/// [`BatchNorm::tensors`]. Each is None where PyTorch has None.
#[derive(Clone, Copy, Debug)]
pub struct ModuleTensors<'a> {
    /// `weight` (affine).
    pub weight: Option<&'a Tensor>,
    /// `bias` (affine).
    pub bias: Option<&'a Tensor>,
    /// `running_mean` (track_running_stats).
    pub running_mean: Option<&'a Tensor>,
    /// `running_var` (track_running_stats).
    pub running_var: Option<&'a Tensor>,
    /// `num_batches_tracked` (track_running_stats).
    pub num_batches_tracked: Option<&'a BatchCounter>,
    /// `save_mean` of the last batch-statistics forward.
    pub save_mean: Option<&'a Tensor>,
    /// `save_invstd` of the last batch-statistics forward.
    pub save_invstd: Option<&'a Tensor>,
}
