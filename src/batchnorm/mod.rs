//! The batch-norm module: PyTorch's `nn.BatchNorm1d/2d/3d`, a thin owner of parameters and
//! buffers over the functional layer ([`crate::functional`]).

mod calls;
mod options;
mod params;
mod record;

pub use options::{BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormOptions, Flavor};
pub use params::ModuleTensors;
pub(crate) use record::GroupInputs;

use crate::activation::Activation;
use crate::device::{blocking, Context};
use crate::error::{Error, Result};
use crate::functional::{
    BackwardArgs, FoldArgs, ForwardArgs, Functional, RunningStats, SavedStats,
};
use crate::module::{next_module_id, GradOutputs, Saved, SavedBuffers, SavedState};
use crate::tensor::{BatchCounter, Tensor};

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
    /// What a SyncBN call adds to the next recorded call (taken by it).
    pub(crate) group: GroupInputs,
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
            group: GroupInputs::default(),
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
    fn check_input(&self, x: &Tensor, group: bool) -> Result<()> {
        let shape = x.shape();
        self.flavor.check_rank(shape.len())?;
        // With the group's statistics the group's count is what must exceed 1.
        let batch_stats = self.uses_batch_stats() && !group;
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

    blocking! {
        /// The eval-mode module as a per-channel affine map, new `[C]` tensors `(scale, shift)`:
        /// `scale = weight / sqrt(running_var + eps)`, `shift = bias - running_mean * scale`, so
        /// that eval batch norm is `x * scale + shift`. Blocks until done; read them with
        /// [`Tensor::to_host`], or fold them into the convolution before the module with
        /// [`crate::fold::fuse_conv_bn_weights`]. Needs `track_running_stats`. Native only.
        pub fn eval_fold(&mut self) -> Result<(Tensor, Tensor)> = eval_fold_async;
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
            .run_async(&FoldArgs {
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
}
