//! The batch-norm module: PyTorch's `nn.BatchNorm1d/2d/3d`, a thin owner of parameters and
//! buffers over the functional layer ([`crate::functional`]).

use crate::activation::Activation;
#[cfg(not(target_arch = "wasm32"))]
use crate::device::block_on;
use crate::device::Context;
use crate::error::{Error, Result};
use crate::functional::{
    BackwardArgs, FoldArgs, ForwardArgs, ForwardWork, Functional, RunningStats, SavedStats,
};
use crate::module::{next_module_id, SavedBuffers, SavedState};
pub use crate::module::{GradOutputs, Gradients, Saved};
use crate::tensor::{BatchCounter, Tensor};

/// Which PyTorch module a [`BatchNorm`] mirrors; it fixes the accepted input ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// `nn.BatchNorm1d`: (N, C) or (N, C, L).
    OneD,
    /// `nn.BatchNorm2d`: (N, C, H, W).
    TwoD,
    /// `nn.BatchNorm3d`: (N, C, D, H, W).
    ThreeD,
}

impl Flavor {
    /// "BatchNorm1d", "BatchNorm2d" or "BatchNorm3d".
    pub fn name(self) -> &'static str {
        match self {
            Flavor::OneD => "BatchNorm1d",
            Flavor::TwoD => "BatchNorm2d",
            Flavor::ThreeD => "BatchNorm3d",
        }
    }

    /// The flavor whose inputs have `rank` dimensions: 2 and 3 are 1d, 4 is 2d, 5 is 3d.
    pub fn for_rank(rank: usize) -> Option<Flavor> {
        match rank {
            2 | 3 => Some(Flavor::OneD),
            4 => Some(Flavor::TwoD),
            5 => Some(Flavor::ThreeD),
            _ => None,
        }
    }

    fn check_rank(self, rank: usize) -> Result<()> {
        let (ok, expected) = match self {
            Flavor::OneD => (rank == 2 || rank == 3, "2D or 3D"),
            Flavor::TwoD => (rank == 4, "4D"),
            Flavor::ThreeD => (rank == 5, "5D"),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidRank {
                module: self.name(),
                expected,
                got: rank,
            })
        }
    }
}

/// Constructor options, with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormOptions {
    /// Added to the variance before the square root. Default `1e-5`.
    pub eps: f64,
    /// Running-stat factor; `None` means a cumulative average (factor `1/num_batches_tracked`).
    /// Default `Some(0.1)`.
    pub momentum: Option<f64>,
    /// Learnable `weight` (init 1) and `bias` (init 0). Default `true`.
    pub affine: bool,
    /// Keep `running_mean` (init 0), `running_var` (init 1) and `num_batches_tracked`; without
    /// them, eval mode also normalizes with batch statistics. Default `true`.
    pub track_running_stats: bool,
}

impl Default for BatchNormOptions {
    fn default() -> Self {
        BatchNormOptions {
            eps: 1e-5,
            momentum: Some(0.1),
            affine: true,
            track_running_stats: true,
        }
    }
}

macro_rules! flavor {
    ($(#[$doc:meta])* $ty:ident, $flavor:expr) => {
        $(#[$doc])*
        ///
        /// A constructor: it builds a [`BatchNorm`] of this flavor.
        #[derive(Clone, Copy, Debug)]
        pub struct $ty;

        impl $ty {
            /// `num_features` channels with PyTorch's default options.
            // A constructor type by design: `BatchNorm1d::new(&ctx, 3)?` reads like PyTorch and
            // gives the one module type, so there is no newtype to unwrap.
            #[allow(clippy::new_ret_no_self)]
            pub fn new(ctx: &Context, num_features: usize) -> Result<BatchNorm> {
                Self::with_options(ctx, num_features, BatchNormOptions::default())
            }

            /// `num_features` channels with the given options.
            pub fn with_options(
                ctx: &Context,
                num_features: usize,
                options: BatchNormOptions,
            ) -> Result<BatchNorm> {
                BatchNorm::new(ctx, $flavor, num_features, options)
            }
        }
    };
}

flavor!(
    /// `nn.BatchNorm1d`: takes (N, C) or (N, C, L) input.
    BatchNorm1d,
    Flavor::OneD
);
flavor!(
    /// `nn.BatchNorm2d`: takes (N, C, H, W) input.
    BatchNorm2d,
    Flavor::TwoD
);
flavor!(
    /// `nn.BatchNorm3d`: takes (N, C, D, H, W) input.
    BatchNorm3d,
    Flavor::ThreeD
);

/// The running buffers of a module with `track_running_stats`.
#[derive(Debug)]
struct Running {
    mean: Tensor,
    var: Tensor,
    tracked: BatchCounter,
}

/// The module's parameters and buffers (apart from the functional layer's scratch, so that both
/// can be borrowed at once).
#[derive(Debug)]
struct State {
    /// Running variance from the biased batch variance (opt-in, not PyTorch's default).
    running_var_biased: bool,
    /// With `affine`.
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    /// With `track_running_stats`.
    running: Option<Running>,
}

/// Batch normalization over the channel axis (axis 1), like PyTorch's `nn.BatchNorm1d/2d/3d`.
///
/// Build one with [`BatchNorm1d::new`], [`BatchNorm2d::new`], [`BatchNorm3d::new`] (or their
/// `with_options`). It starts in training mode, like PyTorch.
///
/// ```no_run
/// use wgpu_batchnorm::{BatchNorm2d, Context, Tensor};
/// let ctx = Context::new()?;
/// let mut bn = BatchNorm2d::new(&ctx, 3)?; // nn.BatchNorm2d(3)
/// let x = Tensor::from_slice(&ctx, &vec![0.5; 2 * 3 * 4 * 4], &[2, 3, 4, 4])?;
/// let y = bn.forward(&x)?; // bn(x), training mode: batch statistics
/// let dy = Tensor::from_slice(&ctx, &vec![1.0; 2 * 3 * 4 * 4], &[2, 3, 4, 4])?;
/// let grads = bn.backward(&dy)?; // y.backward(dy): grad_input, grad_weight, grad_bias
/// bn.eval(); // bn.eval()
/// let y_eval = bn.forward(&x)?; // running statistics
/// println!("{:?}", bn.running_mean()?); // bn.running_mean
/// # Ok::<(), wgpu_batchnorm::Error>(())
/// ```
#[derive(Debug)]
pub struct BatchNorm {
    ctx: Context,
    id: u64,
    flavor: Flavor,
    num_features: usize,
    options: BatchNormOptions,
    training: bool,
    state: State,
    functional: Functional,
    /// Bumped by every setter, so that backward can tell the module changed since the forward.
    version: u64,
    /// The statistics buffers, and what `backward` and `save_mean()` refer to.
    saved: SavedState,
    /// Applied after the normalization (and the residual add), in the same pass.
    activation: Activation,
}

/// A `[C]` tensor with every value `v`.
fn channel_tensor(ctx: &Context, c: usize, v: f32) -> Result<Tensor> {
    if v == 0.0 {
        Tensor::zeros(ctx, &[c])
    } else {
        Tensor::from_slice_queued(ctx, &vec![v; c], &[c])
    }
}

impl State {
    /// The functional arguments of a forward of `x` into `y` with `batch` statistics buffers
    /// (None: running statistics).
    fn forward_args<'a>(
        &'a self,
        options: &BatchNormOptions,
        training: bool,
        x: &'a Tensor,
        y: &'a Tensor,
        batch: Option<&'a SavedBuffers>,
        epilogue: (Activation, Option<&'a Tensor>),
    ) -> ForwardArgs<'a> {
        let batch_stats = training || self.running.is_none();
        ForwardArgs {
            input: x,
            output: y,
            weight: self.weight.as_ref(),
            bias: self.bias.as_ref(),
            // Eval without running stats normalizes with batch statistics and updates nothing.
            running: self.running.as_ref().map(|r| RunningStats {
                mean: &r.mean,
                var: &r.var,
                num_batches_tracked: Some(&r.tracked),
            }),
            training: batch_stats,
            momentum: options.momentum,
            eps: options.eps,
            save_mean: batch.map(|b| &b.mean),
            save_invstd: batch.map(|b| &b.invstd),
            activation: epilogue.0,
            residual: epilogue.1,
            running_var_biased: self.running_var_biased,
            global_stats: None,
        }
    }

    /// The functional arguments of the backward of `saved`.
    fn backward_args<'a>(
        &'a self,
        eps: f64,
        saved: &'a Saved,
        grad_output: &'a Tensor,
        outputs: GradOutputs<'a>,
    ) -> Result<BackwardArgs<'a>> {
        let stats = match (saved.batch.as_deref(), &self.running) {
            (Some(b), _) => SavedStats::Batch {
                save_mean: &b.mean,
                save_invstd: &b.invstd,
            },
            (None, Some(r)) => SavedStats::Running {
                running_mean: &r.mean,
                running_var: &r.var,
                eps,
            },
            (None, None) => return Err(Error::Backward("the forward saved no statistics".into())),
        };
        Ok(BackwardArgs {
            x: &saved.x,
            grad_output,
            weight: self.weight.as_ref(),
            stats,
            grad_input: outputs.grad_input,
            grad_weight: outputs.grad_weight,
            grad_bias: outputs.grad_bias,
            activation: saved.activation,
            bias: self.bias.as_ref(),
            residual: saved.residual.as_ref(),
            grad_residual: outputs.grad_residual,
            global_coefficients: None,
        })
    }
}

impl BatchNorm {
    /// A module of the given flavor. Prefer [`BatchNorm1d::new`] and friends.
    pub fn new(
        ctx: &Context,
        flavor: Flavor,
        num_features: usize,
        options: BatchNormOptions,
    ) -> Result<Self> {
        let c = num_features;
        if u32::try_from(c).is_err() {
            return Err(Error::TooLarge {
                what: format!("num_features = {c}"),
                bytes: c as u64 * 4,
                limit: u64::from(u32::MAX),
            });
        }
        // Every per-channel buffer (parameters and scratch) must fit one binding.
        let limits = ctx.device().limits();
        let limit = limits
            .max_buffer_size
            .min(limits.max_storage_buffer_binding_size);
        if c as u64 * 8 > limit {
            return Err(Error::TooLarge {
                what: format!("per-channel buffers for num_features = {c}"),
                bytes: c as u64 * 8,
                limit,
            });
        }
        let weight = options
            .affine
            .then(|| channel_tensor(ctx, c, 1.0))
            .transpose()?;
        let bias = options
            .affine
            .then(|| channel_tensor(ctx, c, 0.0))
            .transpose()?;
        let running = if options.track_running_stats {
            Some(Running {
                mean: channel_tensor(ctx, c, 0.0)?,
                var: channel_tensor(ctx, c, 1.0)?,
                tracked: BatchCounter::new(ctx)?,
            })
        } else {
            None
        };
        Ok(BatchNorm {
            ctx: ctx.clone(),
            id: next_module_id(),
            flavor,
            num_features: c,
            options,
            training: true,
            state: State {
                running_var_biased: false,
                weight,
                bias,
                running,
            },
            functional: Functional::new(ctx),
            version: 0,
            saved: SavedState::default(),
            activation: Activation::Identity,
        })
    }

    /// Training mode: batch statistics, running statistics updated (`module.train()`).
    pub fn train(&mut self) -> &mut Self {
        self.training = true;
        self
    }

    /// Eval mode: running statistics (`module.eval()`).
    pub fn eval(&mut self) -> &mut Self {
        self.training = false;
        self
    }

    /// `module.train(mode)`.
    pub fn set_training(&mut self, training: bool) -> &mut Self {
        self.training = training;
        self
    }

    /// `module.training`.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Which PyTorch module this mirrors.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// `num_features` (C).
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// The constructor options (eps, momentum, affine, track_running_stats).
    pub fn options(&self) -> BatchNormOptions {
        self.options
    }

    /// `module.eps`.
    pub fn eps(&self) -> f64 {
        self.options.eps
    }

    /// Sets `module.eps` (checked at the next forward, as in PyTorch).
    pub fn set_eps(&mut self, eps: f64) {
        self.options.eps = eps;
        self.version += 1;
    }

    /// `module.momentum`.
    pub fn momentum(&self) -> Option<f64> {
        self.options.momentum
    }

    /// Sets `module.momentum` (`None`: cumulative average).
    pub fn set_momentum(&mut self, momentum: Option<f64>) {
        self.options.momentum = momentum;
    }

    /// The context this module runs on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// This module's identity, unique in the process (optimizer state is kept by it).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether a forward uses batch statistics (training, or eval without running stats).
    fn uses_batch_stats(&self) -> bool {
        self.training || self.state.running.is_none()
    }

    /// Checks an input the way PyTorch does, in PyTorch's order.
    fn check_input(&self, x: &Tensor) -> Result<()> {
        let shape = x.shape();
        self.flavor.check_rank(shape.len())?;
        let batch_stats = self.uses_batch_stats();
        let (n, c) = (shape[0], shape[1]);
        let s: usize = shape[2..].iter().product();
        if batch_stats && n.checked_mul(s) == Some(1) {
            return Err(Error::TooFewValuesPerChannel {
                shape: shape.to_vec(),
            });
        }
        let eps = self.options.eps;
        let eps_ok = if batch_stats { eps > 0.0 } else { eps >= 0.0 };
        if !eps_ok {
            return Err(Error::InvalidEps { eps, batch_stats });
        }
        // PyTorch returns an empty output before it checks channels.
        if x.numel() > 0 && c != self.num_features {
            let what = if self.options.track_running_stats {
                "running_mean"
            } else if self.options.affine {
                "weight"
            } else {
                // PyTorch would run with the input's channel count here; a module with a
                // fixed num_features rejecting it is the safer contract.
                "num_features"
            };
            return Err(Error::ChannelMismatch {
                what,
                input_channels: c,
                num_features: self.num_features,
            });
        }
        Ok(())
    }

    /// Checks `x` and `y`, then records the forward with `record` (a submit or an encoder);
    /// returns the handle for its backward. Nothing changes if a check fails.
    fn run_forward(
        &mut self,
        x: &Tensor,
        residual: Option<&Tensor>,
        y: &Tensor,
        record: impl FnOnce(&mut Functional, &ForwardArgs<'_>, &ForwardWork) -> Result<()>,
    ) -> Result<Saved> {
        let epilogue = (self.activation, residual);
        self.check_input(x)?;
        let batch_stats = self.uses_batch_stats();
        // The functional checks, before any state changes (without the statistics buffers,
        // which are only picked once the call is known to be valid).
        let probe = self
            .state
            .forward_args(&self.options, self.training, x, y, None, epilogue);
        let work = self.functional.check(&probe)?;
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
        let args = self.state.forward_args(
            &self.options,
            self.training,
            x,
            y,
            batch.as_deref(),
            epilogue,
        );
        if let Err(e) = record(&mut self.functional, &args, &work) {
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
        self.encode_forward_saved(encoder, x, y).map(|_| ())
    }

    /// Like [`BatchNorm::encode_forward`], returning the handle for
    /// [`BatchNorm::encode_backward_saved`].
    pub fn encode_forward_saved(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<Saved> {
        self.run_forward(x, None, y, |f, args, work| {
            f.encode_checked_forward(encoder, args, work)
        })
    }

    /// Like [`BatchNorm::encode_forward_saved`], adding `residual` (same shape and memory
    /// format as `x`) before the module's activation: `y = act(bn(x) + residual)`.
    pub fn encode_forward_residual(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        residual: &Tensor,
        y: &Tensor,
    ) -> Result<Saved> {
        self.run_forward(x, Some(residual), y, |f, args, work| {
            f.encode_checked_forward(encoder, args, work)
        })
    }

    /// Runs the forward on `x` and returns a new output tensor; blocks until the GPU is done.
    ///
    /// Training mode (or `track_running_stats = false`) normalizes with the batch statistics
    /// (biased variance) and, in training mode, updates the running statistics;
    /// eval mode normalizes with the running statistics.
    ///
    /// Every call that waits for the GPU has an async form (`forward_async`, ...) that waits
    /// without blocking the thread; the blocking forms are native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        block_on(self.forward_async(x))
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
        Ok(self.forward_saved_residual_async(x, None).await?.0)
    }

    /// Like [`BatchNorm::forward`], also returning the handle for [`BatchNorm::backward_saved`]
    /// (for a module applied more than once before its backward).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_saved(&mut self, x: &Tensor) -> Result<(Tensor, Saved)> {
        block_on(self.forward_saved_residual_async(x, None))
    }

    /// Async form of [`BatchNorm::forward_saved`].
    pub async fn forward_saved_async(&mut self, x: &Tensor) -> Result<(Tensor, Saved)> {
        self.forward_saved_residual_async(x, None).await
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
        block_on(self.forward_residual_async(x, residual))
    }

    /// Async form of [`BatchNorm::forward_residual`].
    pub async fn forward_residual_async(
        &mut self,
        x: &Tensor,
        residual: &Tensor,
    ) -> Result<Tensor> {
        Ok(self
            .forward_saved_residual_async(x, Some(residual))
            .await?
            .0)
    }

    /// Like [`BatchNorm::forward_residual`] (residual optional), also returning the handle for
    /// [`BatchNorm::backward_saved`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_saved_residual(
        &mut self,
        x: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<(Tensor, Saved)> {
        block_on(self.forward_saved_residual_async(x, residual))
    }

    /// Async form of [`BatchNorm::forward_saved_residual`]; every other forward is this one.
    pub async fn forward_saved_residual_async(
        &mut self,
        x: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<(Tensor, Saved)> {
        self.check_input(x)?;
        let y = Tensor::empty_of(&self.ctx, x.shape(), x.dtype(), x.memory_format())?;
        let saved = self.submit_forward(x, residual, &y).await?;
        Ok((y, saved))
    }

    /// The activation applied after the normalization (default Identity), like following the
    /// module with `nn.ReLU()` etc., but in the same pass.
    pub fn set_activation(&mut self, activation: Activation) -> &mut Self {
        self.activation = activation;
        self
    }

    /// The module's activation.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// Whether training forwards update `running_var` with the biased batch variance (M2 / n,
    /// the ONNX / Keras / Burn convention) instead of PyTorch's unbiased M2 / (n - 1). Off by
    /// default; for checkpoints from those frameworks.
    pub fn set_running_var_biased(&mut self, biased: bool) -> &mut Self {
        self.state.running_var_biased = biased;
        self
    }

    /// Tells the module that its parameters or buffers were written on the GPU (through the
    /// buffers of [`BatchNorm::tensors`], by an optimizer step, say), as the `set_*` calls do
    /// themselves: a backward of a forward recorded before the change is then refused instead
    /// of mixing old statistics with new parameters.
    pub fn params_changed(&mut self) {
        self.version += 1;
    }

    /// See [`BatchNorm::set_running_var_biased`].
    pub fn running_var_biased(&self) -> bool {
        self.state.running_var_biased
    }

    /// The eval-mode module as a per-channel affine map, new `[C]` tensors `(scale, shift)`:
    /// `scale = weight / sqrt(running_var + eps)`, `shift = bias - running_mean * scale`, so
    /// that eval batch norm is `x * scale + shift`. Blocks until done; read them with
    /// [`Tensor::to_host`], or fold them into the convolution before the module with
    /// [`crate::fold::fuse_conv_bn_weights`]. Needs `track_running_stats`. Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn eval_fold(&mut self) -> Result<(Tensor, Tensor)> {
        block_on(self.eval_fold_async())
    }

    /// Async form of [`BatchNorm::eval_fold`].
    pub async fn eval_fold_async(&mut self) -> Result<(Tensor, Tensor)> {
        let running = self.state.running.as_ref().ok_or_else(|| {
            Error::NotAvailable("eval_fold: the module has track_running_stats = false".into())
        })?;
        let c = self.num_features;
        let (scale, shift) = (
            Tensor::empty(&self.ctx, &[c])?,
            Tensor::empty(&self.ctx, &[c])?,
        );
        self.functional
            .fold_async(&FoldArgs {
                running_mean: &running.mean,
                running_var: &running.var,
                weight: self.state.weight.as_ref(),
                bias: self.state.bias.as_ref(),
                eps: self.options.eps,
                scale: &scale,
                shift: &shift,
            })
            .await?;
        Ok((scale, shift))
    }

    /// Like [`BatchNorm::forward`], writing into a caller-given output; blocks until done.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_into(&mut self, x: &Tensor, y: &Tensor) -> Result<()> {
        block_on(self.forward_into_async(x, y))
    }

    /// Async form of [`BatchNorm::forward_into`].
    pub async fn forward_into_async(&mut self, x: &Tensor, y: &Tensor) -> Result<()> {
        self.submit_forward(x, None, y).await.map(|_| ())
    }

    /// Records the forward, submits it and waits. A rejected call (an error before anything
    /// was recorded) changes nothing; a forward the device failed to run (a wgpu error, a
    /// failed wait) leaves nothing for `backward` or `save_mean` to use, since its statistics
    /// buffers may hold a partial result.
    async fn submit_forward(
        &mut self,
        x: &Tensor,
        residual: Option<&Tensor>,
        y: &Tensor,
    ) -> Result<Saved> {
        let ctx = self.ctx.clone();
        let mut recorded = false;
        let saved = ctx
            .run_async(|encoder| {
                let saved = self.run_forward(x, residual, y, |f, args, work| {
                    f.encode_checked_forward(encoder, args, work)
                })?;
                recorded = true;
                Ok(saved)
            })
            .await;
        if saved.is_err() && recorded {
            self.saved.forget();
        }
        saved
    }

    // ----- backward ----------------------------------------------------------------------

    /// Checks that backward can run on `saved`.
    fn check_saved(
        &self,
        saved: &Saved,
        grad_weight: Option<&Tensor>,
        grad_bias: Option<&Tensor>,
    ) -> Result<()> {
        if saved.module != self.id {
            return Err(Error::Backward(
                "the saved state belongs to another module".into(),
            ));
        }
        if saved.training != self.training {
            return Err(Error::Backward(format!(
                "the module was switched to {} mode after the forward (recorded in {} mode)",
                if self.training { "training" } else { "eval" },
                if saved.training { "training" } else { "eval" },
            )));
        }
        if saved.version != self.version {
            return Err(Error::Backward(
                "a parameter, buffer or eps was changed after the forward".into(),
            ));
        }
        if !self.options.affine && (grad_weight.is_some() || grad_bias.is_some()) {
            return Err(Error::NotAvailable(
                "grad_weight / grad_bias: the module has affine = false".into(),
            ));
        }
        Ok(())
    }

    fn last(&self) -> Result<Saved> {
        self.saved.last_forward.clone().ok_or_else(|| {
            Error::Backward("no forward to differentiate: call forward first".into())
        })
    }

    /// Gradients of the last forward for `grad_output` (PyTorch's `y.backward(grad_output)`),
    /// in new tensors; blocks until the GPU is done. `grad_weight` and `grad_bias` are `None`
    /// when `affine = false`.
    ///
    /// Training mode, or eval without running stats, differentiates through the batch
    /// statistics; eval mode with running stats gives `grad_input = dy * weight /
    /// sqrt(running_var + eps)`. The forward's input tensor must not have been modified since.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn backward(&mut self, grad_output: &Tensor) -> Result<Gradients> {
        block_on(self.backward_async(grad_output))
    }

    /// Async form of [`BatchNorm::backward`].
    pub async fn backward_async(&mut self, grad_output: &Tensor) -> Result<Gradients> {
        let saved = self.last()?;
        self.backward_saved_async(&saved, grad_output).await
    }

    /// Gradients of the forward that returned `saved`; blocks until the GPU is done.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn backward_saved(&mut self, saved: &Saved, grad_output: &Tensor) -> Result<Gradients> {
        block_on(self.backward_saved_async(saved, grad_output))
    }

    /// Async form of [`BatchNorm::backward_saved`]; every other backward is this one.
    pub async fn backward_saved_async(
        &mut self,
        saved: &Saved,
        grad_output: &Tensor,
    ) -> Result<Gradients> {
        self.check_saved(saved, None, None)?;
        let grad_input = Tensor::empty_of(
            &self.ctx,
            saved.x.shape(),
            saved.x.dtype(),
            saved.x.memory_format(),
        )?;
        let (grad_weight, grad_bias) = if self.options.affine {
            (
                Some(Tensor::empty(&self.ctx, &[self.num_features])?),
                Some(Tensor::empty(&self.ctx, &[self.num_features])?),
            )
        } else {
            (None, None)
        };
        let grad_residual = match &saved.residual {
            Some(r) => Some(Tensor::empty_of(
                &self.ctx,
                r.shape(),
                r.dtype(),
                r.memory_format(),
            )?),
            None => None,
        };
        let outputs = GradOutputs {
            grad_input: Some(&grad_input),
            grad_weight: grad_weight.as_ref(),
            grad_bias: grad_bias.as_ref(),
            grad_residual: grad_residual.as_ref(),
        };
        let ctx = self.ctx.clone();
        ctx.run_async(|encoder| {
            self.run_backward(saved, grad_output, outputs, |f, args| {
                f.encode_backward(encoder, args)
            })
        })
        .await?;
        Ok(Gradients {
            grad_input,
            grad_weight,
            grad_bias,
            grad_residual,
        })
    }

    /// Checks the backward of `saved` (into `outputs`: grad_input, grad_weight, grad_bias),
    /// then records it with `record` (a submit or an encoder). Nothing changes if a check
    /// fails.
    fn run_backward(
        &mut self,
        saved: &Saved,
        grad_output: &Tensor,
        outputs: GradOutputs<'_>,
        record: impl FnOnce(&mut Functional, &BackwardArgs<'_>) -> Result<()>,
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
        )?;
        let args = self
            .state
            .backward_args(self.options.eps, saved, grad_output, outputs)?;
        record(&mut self.functional, &args)
    }

    /// Like [`BatchNorm::backward`], into caller-given tensors (`grad_weight` / `grad_bias` of
    /// shape `[C]`, each optional); blocks until done.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn backward_into(
        &mut self,
        grad_output: &Tensor,
        grad_input: &Tensor,
        grad_weight: Option<&Tensor>,
        grad_bias: Option<&Tensor>,
    ) -> Result<()> {
        block_on(self.backward_into_async(grad_output, grad_input, grad_weight, grad_bias))
    }

    /// Async form of [`BatchNorm::backward_into`].
    pub async fn backward_into_async(
        &mut self,
        grad_output: &Tensor,
        grad_input: &Tensor,
        grad_weight: Option<&Tensor>,
        grad_bias: Option<&Tensor>,
    ) -> Result<()> {
        let saved = self.last()?;
        let outputs = GradOutputs {
            grad_input: Some(grad_input),
            grad_weight,
            grad_bias,
            grad_residual: None,
        };
        let ctx = self.ctx.clone();
        ctx.run_async(|encoder| {
            self.run_backward(&saved, grad_output, outputs, |f, args| {
                f.encode_backward(encoder, args)
            })
        })
        .await
    }

    /// Records the backward of the last forward into `encoder` (no submit, no wait).
    pub fn encode_backward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        grad_output: &Tensor,
        grad_input: &Tensor,
        grad_weight: Option<&Tensor>,
        grad_bias: Option<&Tensor>,
    ) -> Result<()> {
        let saved = self.last()?;
        self.encode_backward_saved(
            encoder,
            &saved,
            grad_output,
            Some(grad_input),
            grad_weight,
            grad_bias,
        )
    }

    /// Records the backward of the forward that returned `saved` into `encoder` (no submit, no
    /// wait); every output is optional.
    pub fn encode_backward_saved(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        saved: &Saved,
        grad_output: &Tensor,
        grad_input: Option<&Tensor>,
        grad_weight: Option<&Tensor>,
        grad_bias: Option<&Tensor>,
    ) -> Result<()> {
        let outputs = GradOutputs {
            grad_input,
            grad_weight,
            grad_bias,
            grad_residual: None,
        };
        self.encode_backward_into(encoder, saved, grad_output, outputs)
    }

    /// Records the backward of the forward that returned `saved` into `encoder` (no submit, no
    /// wait), writing the gradients `outputs` names (`grad_residual` for a forward given a
    /// residual).
    pub fn encode_backward_into(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        saved: &Saved,
        grad_output: &Tensor,
        outputs: GradOutputs<'_>,
    ) -> Result<()> {
        self.run_backward(saved, grad_output, outputs, |f, args| {
            f.encode_backward(encoder, args)
        })
    }

    // ----- parameters and buffers -------------------------------------------------------

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

    /// `module.weight` (None when `affine = false`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn weight(&self) -> Result<Option<Vec<f32>>> {
        block_on(self.weight_async())
    }

    /// Async form of [`BatchNorm::weight`].
    pub async fn weight_async(&self) -> Result<Option<Vec<f32>>> {
        Self::read(self.state.weight.as_ref()).await
    }

    /// `module.bias` (None when `affine = false`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn bias(&self) -> Result<Option<Vec<f32>>> {
        block_on(self.bias_async())
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

    /// `module.running_mean` (None when `track_running_stats = false`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn running_mean(&self) -> Result<Option<Vec<f32>>> {
        block_on(self.running_mean_async())
    }

    /// Async form of [`BatchNorm::running_mean`].
    pub async fn running_mean_async(&self) -> Result<Option<Vec<f32>>> {
        Self::read(self.state.running.as_ref().map(|r| &r.mean)).await
    }

    /// `module.running_var` (None when `track_running_stats = false`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn running_var(&self) -> Result<Option<Vec<f32>>> {
        block_on(self.running_var_async())
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

    /// `module.num_batches_tracked` (None when `track_running_stats = false`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn num_batches_tracked(&self) -> Result<Option<u64>> {
        block_on(self.num_batches_tracked_async())
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

    /// The batch mean of the last forward that used batch statistics (PyTorch's `save_mean`;
    /// zeros before any).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn save_mean(&self) -> Result<Vec<f32>> {
        block_on(self.save_mean_async())
    }

    /// Async form of [`BatchNorm::save_mean`].
    pub async fn save_mean_async(&self) -> Result<Vec<f32>> {
        match &self.saved.last_batch {
            Some(b) => b.mean.to_host_async().await,
            None => Ok(vec![0.0; self.num_features]),
        }
    }

    /// `1 / sqrt(biased batch variance + eps)` of the last forward that used batch statistics
    /// (PyTorch's `save_invstd`; zeros before any).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn save_invstd(&self) -> Result<Vec<f32>> {
        block_on(self.save_invstd_async())
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

    /// How many bind groups the module keeps cached (steady-state checks).
    #[doc(hidden)]
    pub fn cached_bind_groups(&self) -> usize {
        self.functional.cached_bind_groups()
    }

    /// How many GPU buffers the module has created since it was built, parameters excluded
    /// (steady-state checks: repeated calls on the same shapes create none).
    #[doc(hidden)]
    pub fn buffers_created(&self) -> usize {
        self.functional.buffers_created() + self.saved.buffers_made() * 2
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
