//! The module's calls: the two call descriptions and the README tour's conveniences over them
//! (what the module records for them is its `Recordable` implementation, in `mod.rs`).

use super::BatchNorm;
use crate::error::Result;
#[cfg(not(target_arch = "wasm32"))]
use crate::module::Saved;
use crate::module::{BackwardCall, ForwardCall, GradOutputs, Gradients};
use crate::tensor::Tensor;

impl BatchNorm {
    // ----- calls -------------------------------------------------------------------------

    /// Describes a forward of `x`: add `.residual(&r)` and `.output(&y)` as needed, then
    /// `.run()`, `.run_async()` or `.encode(&mut encoder)`; each returns the output and the
    /// [`Saved`] handle for its backward. Every forward below is this one.
    ///
    /// Training mode (or `track_running_stats = false`) normalizes with the batch statistics
    /// (biased variance) and, in training mode, updates the running statistics; eval mode
    /// normalizes with the running statistics.
    pub fn forward_with<'m, 'a>(&'m mut self, x: &'a Tensor) -> ForwardCall<'m, 'a> {
        ForwardCall::new(self, x)
    }

    /// Describes the backward for `grad_output` (PyTorch's `y.backward(grad_output)`) of the
    /// last forward: add `.saved(&saved)` for another one and `.outputs(..)` to write given
    /// tensors, then `.run()`, `.run_async()` or `.encode(&mut encoder)`. Every backward
    /// below is this one.
    ///
    /// Training mode, or eval without running stats, differentiates through the batch
    /// statistics; eval mode with running stats gives `grad_input = dy * weight /
    /// sqrt(running_var + eps)`. The forward's input tensor must not have been modified since.
    /// `grad_weight` and `grad_bias` are `None` when `affine = false`.
    pub fn backward_with<'m, 'a>(&'m mut self, grad_output: &'a Tensor) -> BackwardCall<'m, 'a> {
        BackwardCall::new(self, grad_output)
    }

    /// `bn(x)`: the forward into a new tensor; blocks until the GPU is done.
    ///
    /// Every call that waits for the GPU has an async form that waits without blocking the
    /// thread (here [`BatchNorm::forward_async`]; in general `forward_with(..).run_async()`);
    /// the blocking forms are native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with(x).run()?.0)
    }

    /// Async form of [`BatchNorm::forward`] (the only form on the web).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), wgpu_batchnorm::Error> {
    /// use wgpu_batchnorm::{BatchNorm1d, Context, Tensor};
    /// let ctx = Context::new_async().await?;
    /// let mut bn = BatchNorm1d::new(&ctx, 3)?;
    /// let x = Tensor::from_slice_async(&ctx, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).await?;
    /// let y = bn.forward_async(&x).await?;
    /// let y = y.to_host_async().await?; // about [-1, -1, -1, 1, 1, 1]
    /// # Ok(()) }
    /// ```
    pub async fn forward_async(&mut self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with(x).run_async().await?.0)
    }

    /// Like [`BatchNorm::forward`], also returning the handle for [`BatchNorm::backward_saved`]
    /// (for a module applied more than once before its backward).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_saved(&mut self, x: &Tensor) -> Result<(Tensor, Saved)> {
        self.forward_with(x).run()
    }

    /// The fused ResNet tail, `act(bn(x) + residual)` with the module's activation, in one
    /// pass; blocks until done. Its backward also returns `grad_residual`.
    ///
    /// ```no_run
    /// use wgpu_batchnorm::{Activation, BatchNorm2d, Context, Tensor};
    /// let ctx = Context::new()?;
    /// let mut bn = BatchNorm2d::new(&ctx, 2)?;
    /// bn.set_activation(Activation::Relu);
    /// let x = Tensor::from_slice(&ctx, &[0.5, -1.0, 2.0, 0.0, 1.0, 3.0, -2.0, 0.5], &[2, 2, 1, 2])?;
    /// let identity = Tensor::from_slice(&ctx, &[0.1; 8], &[2, 2, 1, 2])?;
    /// let y = bn.forward_residual(&x, &identity)?; // relu(bn(x) + identity)
    /// let grads = bn.backward(&Tensor::from_slice(&ctx, &[1.0; 8], &[2, 2, 1, 2])?)?;
    /// assert!(grads.grad_residual.is_some());
    /// # Ok::<(), wgpu_batchnorm::Error>(())
    /// ```
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_residual(&mut self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with(x).residual(residual).run()?.0)
    }

    /// Records the forward into `encoder`, writing `y` (same shape as `x`, not overlapping it).
    /// Nothing is submitted and nothing waits: the caller submits the encoder. In training mode
    /// the recorded commands also update the running statistics.
    ///
    /// Parameter setters (`set_weight`, ...) write through the queue: they take effect before
    /// the next submitted command buffer, including one recorded earlier.
    pub fn encode_forward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<()> {
        self.forward_with(x).output(y).encode(encoder).map(drop)
    }

    /// Gradients of the last forward for `grad_output`, in new tensors; blocks until the GPU
    /// is done (see [`BatchNorm::backward_with`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn backward(&mut self, grad_output: &Tensor) -> Result<Gradients> {
        self.backward_with(grad_output).run()
    }

    /// Async form of [`BatchNorm::backward`].
    pub async fn backward_async(&mut self, grad_output: &Tensor) -> Result<Gradients> {
        self.backward_with(grad_output).run_async().await
    }

    /// Gradients of the forward that returned `saved`; blocks until the GPU is done.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn backward_saved(&mut self, saved: &Saved, grad_output: &Tensor) -> Result<Gradients> {
        self.backward_with(grad_output).saved(saved).run()
    }

    /// Records the backward of the last forward into `encoder` (no submit, no wait), writing
    /// `grad_input` and, where given, `grad_weight` and `grad_bias` (`[C]`).
    pub fn encode_backward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        grad_output: &Tensor,
        grad_input: &Tensor,
        grad_weight: Option<&Tensor>,
        grad_bias: Option<&Tensor>,
    ) -> Result<()> {
        let outputs = GradOutputs {
            grad_input: Some(grad_input),
            grad_weight,
            grad_bias,
            grad_residual: None,
        };
        self.backward_with(grad_output)
            .outputs(outputs)
            .encode(encoder)
    }
}
