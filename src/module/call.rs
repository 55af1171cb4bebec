//! One call description per direction, for every module: `module.forward_with(&x)` and
//! `module.backward_with(&grad_output)` name the call's tensors, and `.run()`,
//! `.run_async()` or `.encode(&mut encoder)` says how it runs. A module implements
//! [`Recordable`] (check and record into an encoder); the submitting, waiting and blocking
//! forms are written here, once, for all of them.

use super::{GradOutputs, Gradients, Saved};
#[cfg(not(target_arch = "wasm32"))]
use crate::device::block_on;
use crate::device::Context;
use crate::error::Result;
use crate::tensor::Tensor;

/// What a module records; everything else about running a call is [`ForwardCall`]'s and
/// [`BackwardCall`]'s.
pub(crate) trait Recordable {
    /// The module's context.
    fn context(&self) -> &Context;

    /// A new output for a forward of `x` (unchecked: `record_forward` checks the call).
    fn forward_output(&self, x: &Tensor) -> Result<Tensor>;

    /// Checks the forward of `x` (+ `residual`) into `y` and records it; returns the handle
    /// for its backward. Nothing changes if a check fails.
    fn record_forward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        residual: Option<&Tensor>,
        y: &Tensor,
    ) -> Result<Saved>;

    /// After a recorded forward the device failed to run: nothing is left for a backward.
    fn forget_forward(&mut self);

    /// The last forward's handle.
    fn last_forward(&self) -> Result<Saved>;

    /// New gradient tensors for the backward of `saved` (unchecked: `record_backward` checks
    /// the call).
    fn backward_outputs(&self, saved: &Saved) -> Result<Gradients>;

    /// Checks the backward of `saved` into `outputs` and records it. Nothing changes if a
    /// check fails.
    fn record_backward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        saved: &Saved,
        grad_output: &Tensor,
        outputs: GradOutputs<'_>,
    ) -> Result<()>;
}

/// A forward call being described: the input, and optionally a residual and an output
/// tensor; finished by [`ForwardCall::run`], [`ForwardCall::run_async`] or
/// [`ForwardCall::encode`], each returning the output and the handle for its backward.
///
/// ```no_run
/// use wgpu_batchnorm::{Activation, BatchNorm2d, Context, Tensor};
/// let ctx = Context::new()?;
/// let mut bn = BatchNorm2d::new(&ctx, 2)?;
/// bn.set_activation(Activation::Relu);
/// let x = Tensor::from_slice(&ctx, &[0.5, -1.0, 2.0, 0.0, 1.0, 3.0, -2.0, 0.5], &[2, 2, 1, 2])?;
/// let identity = Tensor::from_slice(&ctx, &[0.1; 8], &[2, 2, 1, 2])?;
/// let y = Tensor::empty(&ctx, &[2, 2, 1, 2])?;
/// let mut encoder = ctx.device().create_command_encoder(&Default::default());
/// // relu(bn(x) + identity) into y, recorded only: the caller submits.
/// let (_, saved) = bn.forward_with(&x).residual(&identity).output(&y).encode(&mut encoder)?;
/// ctx.queue().submit(Some(encoder.finish()));
/// let grads = bn.backward_with(&Tensor::from_slice(&ctx, &[1.0; 8], &[2, 2, 1, 2])?)
///     .saved(&saved)
///     .run()?;
/// assert!(grads.grad_residual.is_some());
/// # Ok::<(), wgpu_batchnorm::Error>(())
/// ```
#[must_use = "a call does nothing until .run(), .run_async() or .encode()"]
pub struct ForwardCall<'m, 'a> {
    module: &'m mut dyn Recordable,
    x: &'a Tensor,
    residual: Option<&'a Tensor>,
    output: Option<&'a Tensor>,
}

impl std::fmt::Debug for ForwardCall<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardCall")
            .field("x", self.x)
            .field("residual", &self.residual)
            .field("output", &self.output)
            .finish()
    }
}

impl<'m, 'a> ForwardCall<'m, 'a> {
    pub(crate) fn new(module: &'m mut dyn Recordable, x: &'a Tensor) -> Self {
        ForwardCall {
            module,
            x,
            residual: None,
            output: None,
        }
    }

    /// Adds `residual` (same shape and memory format as `x`) before the module's activation:
    /// `y = act(bn(x) + residual)`, in the same pass; its backward also gives
    /// `grad_residual`. `None` leaves the call without one.
    pub fn residual(mut self, residual: impl Into<Option<&'a Tensor>>) -> Self {
        self.residual = residual.into();
        self
    }

    /// Writes `y` (same shape as `x`, not overlapping it) instead of a new tensor.
    pub fn output(mut self, y: &'a Tensor) -> Self {
        self.output = Some(y);
        self
    }

    fn output_tensor(&self) -> Result<Tensor> {
        match self.output {
            Some(y) => Ok(y.clone()),
            None => self.module.forward_output(self.x),
        }
    }

    /// Records the call into `encoder`; submits nothing and waits on nothing. In training mode
    /// the recorded commands also update the running statistics.
    ///
    /// Parameter setters (`set_weight`, ...) write through the queue: they take effect before
    /// the next submitted command buffer, including one recorded earlier.
    pub fn encode(self, encoder: &mut wgpu::CommandEncoder) -> Result<(Tensor, Saved)> {
        let y = self.output_tensor()?;
        let saved = self
            .module
            .record_forward(encoder, self.x, self.residual, &y)?;
        Ok((y, saved))
    }

    /// Records the call, submits it and waits (without blocking the thread on the web). A
    /// rejected call changes nothing; a forward the device failed to run leaves nothing for a
    /// backward, since its statistics may be partial.
    pub async fn run_async(self) -> Result<(Tensor, Saved)> {
        let y = self.output_tensor()?;
        let ctx = self.module.context().clone();
        let (x, residual) = (self.x, self.residual);
        let mut recorded = false;
        let saved = ctx
            .run_async(|encoder| {
                let saved = self.module.record_forward(encoder, x, residual, &y)?;
                recorded = true;
                Ok(saved)
            })
            .await;
        if saved.is_err() && recorded {
            self.module.forget_forward();
        }
        Ok((y, saved?))
    }

    /// [`ForwardCall::run_async`], blocking. Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run(self) -> Result<(Tensor, Saved)> {
        block_on(self.run_async())
    }
}

/// A backward call being described: the gradient of the output, and optionally the forward
/// it differentiates (default: the module's last); finished by [`BackwardCall::run`],
/// [`BackwardCall::run_async`] or [`BackwardCall::encode`], each returning new gradient
/// tensors, or given tensors to write with [`BackwardCall::outputs`].
#[must_use = "a call does nothing until .run(), .run_async() or .encode()"]
pub struct BackwardCall<'m, 'a> {
    module: &'m mut dyn Recordable,
    grad_output: &'a Tensor,
    saved: Option<&'a Saved>,
}

/// A backward call into given tensors ([`BackwardCall::outputs`]); finished like
/// [`BackwardCall`], returning nothing.
#[must_use = "a call does nothing until .run(), .run_async() or .encode()"]
pub struct BackwardInto<'m, 'a> {
    call: BackwardCall<'m, 'a>,
    outputs: GradOutputs<'a>,
}

impl std::fmt::Debug for BackwardCall<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackwardCall")
            .field("grad_output", self.grad_output)
            .field("saved", &self.saved)
            .finish()
    }
}

impl std::fmt::Debug for BackwardInto<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackwardInto")
            .field("call", &self.call)
            .field("outputs", &self.outputs)
            .finish()
    }
}

impl<'m, 'a> BackwardCall<'m, 'a> {
    pub(crate) fn new(module: &'m mut dyn Recordable, grad_output: &'a Tensor) -> Self {
        BackwardCall {
            module,
            grad_output,
            saved: None,
        }
    }

    /// Differentiates the forward that returned `saved` (for a module applied more than once
    /// before its backward) instead of the last one.
    pub fn saved(mut self, saved: &'a Saved) -> Self {
        self.saved = Some(saved);
        self
    }

    /// Writes the gradients `outputs` names (each optional: a gradient not asked for is not
    /// computed) instead of new tensors.
    pub fn outputs(self, outputs: GradOutputs<'a>) -> BackwardInto<'m, 'a> {
        BackwardInto {
            call: self,
            outputs,
        }
    }

    fn forward(&self) -> Result<Saved> {
        match self.saved {
            Some(s) => Ok(s.clone()),
            None => self.module.last_forward(),
        }
    }

    /// Records the call into `encoder`; submits nothing and waits on nothing.
    pub fn encode(self, encoder: &mut wgpu::CommandEncoder) -> Result<Gradients> {
        let saved = self.forward()?;
        let grads = self.module.backward_outputs(&saved)?;
        self.module
            .record_backward(encoder, &saved, self.grad_output, grads.as_outputs())?;
        Ok(grads)
    }

    /// Records the call, submits it and waits (without blocking the thread on the web).
    pub async fn run_async(self) -> Result<Gradients> {
        let saved = self.forward()?;
        let grads = self.module.backward_outputs(&saved)?;
        self.submit(&saved, grads.as_outputs()).await?;
        Ok(grads)
    }

    /// [`BackwardCall::run_async`], blocking. Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run(self) -> Result<Gradients> {
        block_on(self.run_async())
    }

    async fn submit(self, saved: &Saved, outputs: GradOutputs<'_>) -> Result<()> {
        let ctx = self.module.context().clone();
        let grad_output = self.grad_output;
        ctx.run_async(|encoder| {
            self.module
                .record_backward(encoder, saved, grad_output, outputs)
        })
        .await
    }
}

impl BackwardInto<'_, '_> {
    /// Records the call into `encoder`; submits nothing and waits on nothing.
    pub fn encode(self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let saved = self.call.forward()?;
        self.call
            .module
            .record_backward(encoder, &saved, self.call.grad_output, self.outputs)
    }

    /// Records the call, submits it and waits (without blocking the thread on the web).
    pub async fn run_async(self) -> Result<()> {
        let saved = self.call.forward()?;
        self.call.submit(&saved, self.outputs).await
    }

    /// [`BackwardInto::run_async`], blocking. Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run(self) -> Result<()> {
        block_on(self.run_async())
    }
}
