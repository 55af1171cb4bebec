//! The batch-norm module: PyTorch's `nn.BatchNorm1d/2d/3d` with its parameters and buffers on the
//! GPU.

use wgpu::util::DeviceExt;

use crate::backward::{self, BackwardArgs, Gradients, SavedStats};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{self, Binding, Kernel};
use crate::tensor::{self, Tensor};
use crate::workspace::{ParamsKey, Workspace};

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
        /// A [`BatchNorm`] of this flavor; every [`BatchNorm`] method is available through
        /// `Deref`.
        pub struct $ty(BatchNorm);

        impl $ty {
            /// `num_features` channels with PyTorch's default options.
            pub fn new(ctx: &Context, num_features: usize) -> Result<Self> {
                Self::with_options(ctx, num_features, BatchNormOptions::default())
            }

            /// `num_features` channels with the given options.
            pub fn with_options(
                ctx: &Context,
                num_features: usize,
                options: BatchNormOptions,
            ) -> Result<Self> {
                BatchNorm::new(ctx, $flavor, num_features, options).map($ty)
            }

            /// The flavor-independent module.
            pub fn into_inner(self) -> BatchNorm {
                self.0
            }
        }

        impl std::ops::Deref for $ty {
            type Target = BatchNorm;
            fn deref(&self) -> &BatchNorm {
                &self.0
            }
        }

        impl std::ops::DerefMut for $ty {
            fn deref_mut(&mut self) -> &mut BatchNorm {
                &mut self.0
            }
        }

        impl From<$ty> for BatchNorm {
            fn from(module: $ty) -> BatchNorm {
                module.0
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

/// What a forward call will do, decided before anything is recorded.
struct ForwardPlan {
    key: ParamsKey,
    batch_stats: bool,
    update_running: bool,
}

/// What backward needs to know about the last forward.
struct LastForward {
    x: Tensor,
    batch_stats: bool,
    training: bool,
    version: u64,
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
pub struct BatchNorm {
    ctx: Context,
    flavor: Flavor,
    num_features: usize,
    options: BatchNormOptions,
    training: bool,
    /// Ones and zeros when affine is off (the kernels always scale and shift).
    weight: Tensor,
    bias: Tensor,
    /// Zeros and ones when running stats are not tracked (then never read).
    running_mean: Tensor,
    running_var: Tensor,
    /// num_batches_tracked as (low, high) u32 words.
    tracked: wgpu::Buffer,
    /// Batch statistics of the last forward that used them, and M2 for running_var.
    save_mean: Tensor,
    save_invstd: Tensor,
    m2: Tensor,
    workspace: Workspace,
    /// Bumped by every setter, so that backward can tell the module changed since the forward.
    version: u64,
    last_forward: Option<LastForward>,
}

/// A `[C]` tensor with the given contents (at least 16 bytes of buffer).
fn channel_tensor(ctx: &Context, label: &str, values: &[f32]) -> Tensor {
    let contents: &[u8] = if values.is_empty() {
        &[0u8; 16]
    } else {
        bytemuck::cast_slice(values)
    };
    let buffer = ctx
        .device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: tensor::TENSOR_USAGE,
        });
    Tensor::from_raw(buffer, 0, vec![values.len()])
}

/// The params key of a tensor pass over `x` (and `others` of the same shape, which must also
/// allow vec4 reads for the vec4 kernels to be used).
pub(crate) fn tensor_params_key(
    x: &Tensor,
    others: &[&Tensor],
    eps: f64,
    momentum: Option<f64>,
) -> Result<ParamsKey> {
    let shape = x.shape();
    let too_large = |what: String, bytes: u64, limit: u64| Error::TooLarge { what, bytes, limit };
    // Kernels index items with u32; larger tensors are processed in binding windows, but
    // their element count must still fit.
    if x.numel() as u64 > u64::from(u32::MAX) {
        return Err(too_large(
            format!("a tensor of shape {shape:?} (u32 element indices)"),
            x.size_bytes(),
            u64::from(u32::MAX) * 4,
        ));
    }
    let s: usize = shape[2..].iter().product();
    let dim = |v: usize| {
        u32::try_from(v).map_err(|_| {
            too_large(
                format!("a dimension of shape {shape:?}"),
                v as u64,
                u64::from(u32::MAX),
            )
        })
    };
    Ok(ParamsKey {
        n: dim(shape[0])?,
        c: dim(shape[1])?,
        s: dim(s)?,
        vec4_ok: std::iter::once(x)
            .chain(others.iter().copied())
            .all(|t| t.offset().is_multiple_of(16)),
        eps: (eps as f32).to_bits(),
        momentum: momentum.map(|m| (m as f32).to_bits()),
    })
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
        ctx.scoped(|| {
            let tensor = |label: &str, v: f32| channel_tensor(ctx, label, &vec![v; c]);
            let tracked = ctx
                .device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("num_batches_tracked"),
                    contents: &[0u8; 8],
                    usage: tensor::TENSOR_USAGE,
                });
            Ok(BatchNorm {
                ctx: ctx.clone(),
                flavor,
                num_features: c,
                options,
                training: true,
                weight: tensor("weight", 1.0),
                bias: tensor("bias", 0.0),
                running_mean: tensor("running_mean", 0.0),
                running_var: tensor("running_var", 1.0),
                tracked,
                save_mean: tensor("save_mean", 0.0),
                save_invstd: tensor("save_invstd", 0.0),
                m2: tensor("m2", 0.0),
                workspace: Workspace::new(ctx),
                version: 0,
                last_forward: None,
            })
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

    /// Whether a forward uses batch statistics (training, or eval without running stats).
    fn uses_batch_stats(&self) -> bool {
        self.training || !self.options.track_running_stats
    }

    /// Checks an input the way PyTorch does, in PyTorch's order, and decides the work.
    fn plan_forward(&self, x: &Tensor) -> Result<ForwardPlan> {
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
        let empty = x.numel() == 0;
        // PyTorch returns an empty output before it checks channels.
        if !empty && c != self.num_features {
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
        let mut key = tensor_params_key(x, &[], eps, self.options.momentum)?;
        if empty {
            key.c = self.num_features as u32;
        }
        Ok(ForwardPlan {
            key,
            batch_stats,
            update_running: self.training && self.options.track_running_stats,
        })
    }

    fn check_output(x: &Tensor, y: &Tensor) -> Result<()> {
        y.expect_shape("output tensor", x.shape())?;
        if x.numel() > 0 && x.overlaps(y) {
            return Err(Error::Aliasing);
        }
        Ok(())
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
        let fp = self.plan_forward(x)?;
        Self::check_output(x, y)?;
        let ctx = self.ctx.clone();
        ctx.scoped(|| {
            self.record_forward(encoder, &fp, x, y);
            Ok(())
        })
    }

    fn record_forward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        fp: &ForwardPlan,
        x: &Tensor,
        y: &Tensor,
    ) {
        self.last_forward = Some(LastForward {
            x: x.clone(),
            batch_stats: fp.batch_stats,
            training: self.training,
            version: self.version,
        });
        let prepared = self.workspace.prepare(fp.key);
        let ws = &mut self.workspace;
        let tensor_groups = prepared.plan.as_ref().map(|plan| {
            let blocks = || plan.blocks.iter().zip(&prepared.blocks);
            let stats_groups = fp.batch_stats.then(|| {
                let partials = ws.partials(plan.partials());
                let per_block: Vec<wgpu::BindGroup> = blocks()
                    .map(|(block, params)| {
                        ws.bind(
                            Kernel::Stats,
                            &[params.clone(), x.window(plan, block), partials.clone()],
                        )
                    })
                    .collect();
                let finalize = ws.bind(
                    Kernel::FinalizeStats,
                    &[
                        prepared.channel.clone(),
                        partials,
                        self.save_mean.slot(),
                        self.save_invstd.slot(),
                        self.m2.slot(),
                    ],
                );
                (per_block, finalize)
            });
            let (mean, spread) = if fp.batch_stats {
                (&self.save_mean, &self.save_invstd)
            } else {
                (&self.running_mean, &self.running_var)
            };
            let normalize: Vec<wgpu::BindGroup> = blocks()
                .map(|(block, params)| {
                    ws.bind(
                        Kernel::Normalize,
                        &[
                            params.clone(),
                            x.window(plan, block),
                            y.window(plan, block),
                            mean.slot(),
                            spread.slot(),
                            self.weight.slot(),
                            self.bias.slot(),
                        ],
                    )
                })
                .collect();
            (plan, stats_groups, normalize)
        });
        let update = fp.update_running.then(|| {
            ws.bind(
                Kernel::UpdateRunning,
                &[
                    prepared.channel.clone(),
                    self.save_mean.slot(),
                    self.m2.slot(),
                    self.running_mean.slot(),
                    self.running_var.slot(),
                    Binding::whole(&self.tracked),
                ],
            )
        });
        if tensor_groups.is_none() && update.is_none() {
            return;
        }
        let device = self.ctx.device();
        let k = self.ctx.kernels();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("batchnorm forward"),
            timestamp_writes: None,
        });
        if let Some((plan, stats_groups, normalize)) = &tensor_groups {
            if let Some((stats, finalize)) = stats_groups {
                kernels::stats::encode(k, device, &mut pass, plan, stats, finalize);
            }
            kernels::normalize::encode(k, device, &mut pass, plan, normalize, !fp.batch_stats);
        }
        if let Some(update) = &update {
            kernels::update_running::encode(k, device, &mut pass, update);
        }
    }

    /// Runs the forward on `x` and returns a new output tensor; blocks until the GPU is done.
    ///
    /// Training mode (or `track_running_stats = false`) normalizes with the batch statistics
    /// (biased variance) and, in training mode, updates the running statistics; eval mode
    /// normalizes with the running statistics.
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let fp = self.plan_forward(x)?;
        let y = Tensor::empty(&self.ctx, x.shape())?;
        self.submit(|bn, encoder| {
            bn.record_forward(encoder, &fp, x, &y);
            Ok(())
        })?;
        Ok(y)
    }

    /// Like [`BatchNorm::forward`], writing into a caller-given output; blocks until done.
    pub fn forward_into(&mut self, x: &Tensor, y: &Tensor) -> Result<()> {
        let fp = self.plan_forward(x)?;
        Self::check_output(x, y)?;
        self.submit(|bn, encoder| {
            bn.record_forward(encoder, &fp, x, y);
            Ok(())
        })
    }

    /// Records with `f` into a new encoder, submits it and waits, inside error scopes.
    fn submit(
        &mut self,
        f: impl FnOnce(&mut Self, &mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<()> {
        let ctx = self.ctx.clone();
        ctx.scoped(|| {
            let mut encoder =
                ctx.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("batchnorm"),
                    });
            f(self, &mut encoder)?;
            ctx.submit_and_wait(encoder.finish())
        })
    }

    // ----- backward ----------------------------------------------------------------------

    /// The last forward's input and whether it used batch statistics, after checking that
    /// backward can run on it.
    fn check_backward(
        &self,
        grad_output: &Tensor,
        grad_weight: Option<&Tensor>,
        grad_bias: Option<&Tensor>,
    ) -> Result<(Tensor, bool)> {
        let last = self.last_forward.as_ref().ok_or_else(|| {
            Error::Backward("no forward to differentiate: call forward first".into())
        })?;
        if last.training != self.training {
            return Err(Error::Backward(format!(
                "the module was switched to {} mode after the forward (recorded in {} mode)",
                if self.training { "training" } else { "eval" },
                if last.training { "training" } else { "eval" },
            )));
        }
        if last.version != self.version {
            return Err(Error::Backward(
                "a parameter, buffer or eps was changed after the forward".into(),
            ));
        }
        grad_output.expect_shape("grad_output (must match the forward input)", last.x.shape())?;
        if !self.options.affine && (grad_weight.is_some() || grad_bias.is_some()) {
            return Err(Error::NotAvailable(
                "grad_weight / grad_bias: the module has affine = false".into(),
            ));
        }
        Ok((last.x.clone(), last.batch_stats))
    }

    /// Gradients of the last forward for `grad_output` (PyTorch's `y.backward(grad_output)`),
    /// in new tensors; blocks until the GPU is done. `grad_weight` and `grad_bias` are `None`
    /// when `affine = false`.
    ///
    /// Training mode, or eval without running stats, differentiates through the batch
    /// statistics; eval mode with running stats gives `grad_input = dy * weight /
    /// sqrt(running_var + eps)`. The forward's input tensor must not have been modified since.
    pub fn backward(&mut self, grad_output: &Tensor) -> Result<Gradients> {
        let shape = self
            .last_forward
            .as_ref()
            .map(|l| l.x.shape().to_vec())
            .unwrap_or_default();
        let grad_input = Tensor::empty(&self.ctx, &shape)?;
        let (grad_weight, grad_bias) = if self.options.affine {
            (
                Some(Tensor::empty(&self.ctx, &[self.num_features])?),
                Some(Tensor::empty(&self.ctx, &[self.num_features])?),
            )
        } else {
            (None, None)
        };
        self.backward_into(
            grad_output,
            &grad_input,
            grad_weight.as_ref(),
            grad_bias.as_ref(),
        )?;
        Ok(Gradients {
            grad_input,
            grad_weight,
            grad_bias,
        })
    }

    /// Like [`BatchNorm::backward`], into caller-given tensors (`grad_weight` / `grad_bias` of
    /// shape `[C]`, each optional); blocks until done.
    pub fn backward_into(
        &mut self,
        grad_output: &Tensor,
        grad_input: &Tensor,
        grad_weight: Option<&Tensor>,
        grad_bias: Option<&Tensor>,
    ) -> Result<()> {
        let ctx = self.ctx.clone();
        ctx.scoped(|| {
            let mut encoder =
                ctx.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("batchnorm backward"),
                    });
            self.encode_backward(
                &mut encoder,
                grad_output,
                grad_input,
                grad_weight,
                grad_bias,
            )?;
            ctx.submit_and_wait(encoder.finish())
        })
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
        let (x, batch_stats) = self.check_backward(grad_output, grad_weight, grad_bias)?;
        let stats = if batch_stats {
            SavedStats::Batch {
                save_mean: &self.save_mean,
                save_invstd: &self.save_invstd,
            }
        } else {
            SavedStats::Running {
                running_mean: &self.running_mean,
                running_var: &self.running_var,
                eps: self.options.eps,
            }
        };
        let args = BackwardArgs {
            x: &x,
            grad_output,
            weight: self.options.affine.then_some(&self.weight),
            stats,
            grad_input,
            grad_weight,
            grad_bias,
        };
        backward::encode(&self.ctx, &mut self.workspace, encoder, &args)
    }

    // ----- parameters and buffers -------------------------------------------------------

    fn write_channels(
        &mut self,
        what: &str,
        which: fn(&Self) -> &Tensor,
        values: &[f32],
    ) -> Result<()> {
        let c = self.num_features;
        if values.len() != c {
            return Err(Error::ShapeMismatch {
                what: what.to_string(),
                expected: vec![c],
                got: vec![values.len()],
            });
        }
        self.version += 1;
        if c == 0 {
            return Ok(());
        }
        let t = which(self);
        self.ctx.scoped(|| {
            self.ctx
                .queue()
                .write_buffer(t.buffer(), t.offset(), bytemuck::cast_slice(values));
            Ok(())
        })
    }

    fn require(&self, present: bool, what: &str, option: &str) -> Result<()> {
        if present {
            Ok(())
        } else {
            Err(Error::NotAvailable(format!(
                "{what}: the module has {option} = false"
            )))
        }
    }

    fn read_if(&self, present: bool, t: &Tensor) -> Result<Option<Vec<f32>>> {
        if present {
            t.to_vec(&self.ctx).map(Some)
        } else {
            Ok(None)
        }
    }

    /// `module.weight` (None when `affine = false`).
    pub fn weight(&self) -> Result<Option<Vec<f32>>> {
        self.read_if(self.options.affine, &self.weight)
    }

    /// `module.bias` (None when `affine = false`).
    pub fn bias(&self) -> Result<Option<Vec<f32>>> {
        self.read_if(self.options.affine, &self.bias)
    }

    /// Sets `module.weight` (C values).
    pub fn set_weight(&mut self, values: &[f32]) -> Result<()> {
        self.require(self.options.affine, "weight", "affine")?;
        self.write_channels("weight", |m| &m.weight, values)
    }

    /// Sets `module.bias` (C values).
    pub fn set_bias(&mut self, values: &[f32]) -> Result<()> {
        self.require(self.options.affine, "bias", "affine")?;
        self.write_channels("bias", |m| &m.bias, values)
    }

    /// `module.running_mean` (None when `track_running_stats = false`).
    pub fn running_mean(&self) -> Result<Option<Vec<f32>>> {
        self.read_if(self.options.track_running_stats, &self.running_mean)
    }

    /// `module.running_var` (None when `track_running_stats = false`).
    pub fn running_var(&self) -> Result<Option<Vec<f32>>> {
        self.read_if(self.options.track_running_stats, &self.running_var)
    }

    /// Sets `module.running_mean` (C values).
    pub fn set_running_mean(&mut self, values: &[f32]) -> Result<()> {
        self.require(
            self.options.track_running_stats,
            "running_mean",
            "track_running_stats",
        )?;
        self.write_channels("running_mean", |m| &m.running_mean, values)
    }

    /// Sets `module.running_var` (C values).
    pub fn set_running_var(&mut self, values: &[f32]) -> Result<()> {
        self.require(
            self.options.track_running_stats,
            "running_var",
            "track_running_stats",
        )?;
        self.write_channels("running_var", |m| &m.running_var, values)
    }

    /// `module.num_batches_tracked` (None when `track_running_stats = false`).
    pub fn num_batches_tracked(&self) -> Result<Option<u64>> {
        if !self.options.track_running_stats {
            return Ok(None);
        }
        let bytes = tensor::read_bytes(&self.ctx, &self.tracked, 0, 8)?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        Ok(Some(u64::from(words[0]) | (u64::from(words[1]) << 32)))
    }

    /// Sets `module.num_batches_tracked`.
    pub fn set_num_batches_tracked(&mut self, value: u64) -> Result<()> {
        self.require(
            self.options.track_running_stats,
            "num_batches_tracked",
            "track_running_stats",
        )?;
        let words = [value as u32, (value >> 32) as u32];
        self.ctx.scoped(|| {
            self.ctx
                .queue()
                .write_buffer(&self.tracked, 0, bytemuck::cast_slice(&words));
            Ok(())
        })
    }

    /// `module.reset_running_stats()`: running_mean 0, running_var 1, num_batches_tracked 0.
    pub fn reset_running_stats(&mut self) -> Result<()> {
        if !self.options.track_running_stats {
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

    /// The batch mean of the last forward that used batch statistics (PyTorch's `save_mean`).
    pub fn save_mean(&self) -> Result<Vec<f32>> {
        self.save_mean.to_vec(&self.ctx)
    }

    /// `1 / sqrt(biased batch variance + eps)` of the last forward that used batch statistics
    /// (PyTorch's `save_invstd`).
    pub fn save_invstd(&self) -> Result<Vec<f32>> {
        self.save_invstd.to_vec(&self.ctx)
    }

    /// The GPU tensors of `weight`, `bias`, `running_mean`, `running_var`, `save_mean` and
    /// `save_invstd` (shape `[C]` each), for use in the caller's own kernels or with
    /// [`crate::BatchNormBackward`]. Writing them directly bypasses the module's change
    /// tracking: call forward again before backward.
    pub fn tensors(&self) -> ModuleTensors<'_> {
        ModuleTensors {
            weight: &self.weight,
            bias: &self.bias,
            running_mean: &self.running_mean,
            running_var: &self.running_var,
            save_mean: &self.save_mean,
            save_invstd: &self.save_invstd,
        }
    }

    /// How many bind groups the module keeps cached (for steady-state checks).
    pub fn cached_bind_groups(&self) -> usize {
        self.workspace.cached_bind_groups()
    }

    /// How many scratch and parameter GPU buffers the module has created since it was built
    /// (for steady-state checks: repeated calls on the same shapes create none).
    pub fn buffers_created(&self) -> usize {
        self.workspace.buffers_created()
    }
}

/// The module's parameters, buffers and saved statistics as GPU tensors; see
/// [`BatchNorm::tensors`].
#[derive(Clone, Copy)]
pub struct ModuleTensors<'a> {
    /// `weight` (ones when affine = false).
    pub weight: &'a Tensor,
    /// `bias` (zeros when affine = false).
    pub bias: &'a Tensor,
    /// `running_mean`.
    pub running_mean: &'a Tensor,
    /// `running_var`.
    pub running_var: &'a Tensor,
    /// `save_mean` of the last batch-statistics forward.
    pub save_mean: &'a Tensor,
    /// `save_invstd` of the last batch-statistics forward.
    pub save_invstd: &'a Tensor,
}
