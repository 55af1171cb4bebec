//! The batch-norm module: PyTorch's `nn.BatchNorm1d/2d/3d` with its parameters and buffers on the
//! GPU.

use std::collections::HashMap;

use wgpu::util::DeviceExt;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{self, Kernel, Params, Plan};
use crate::tensor::{self, Tensor};

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

/// Everything that fixes a params buffer's contents.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct ParamsKey {
    n: u32,
    c: u32,
    s: u32,
    vec4_ok: bool,
    eps: u32,
    momentum: Option<u32>,
}

/// Everything that fixes a forward's bind groups.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct BindKey {
    params: ParamsKey,
    x: (wgpu::Buffer, u64),
    y: (wgpu::Buffer, u64),
}

/// The passes over the tensor (absent for an empty input) and the running-stat update.
struct ForwardGroups {
    tensor: Option<TensorGroups>,
    update: wgpu::BindGroup,
}

struct TensorGroups {
    stats: wgpu::BindGroup,
    finalize: wgpu::BindGroup,
    normalize: wgpu::BindGroup,
}

/// What a forward call will do, decided before anything is recorded.
struct ForwardPlan {
    key: ParamsKey,
    plan: Option<Plan>,
    batch_stats: bool,
    update_running: bool,
}

/// At most this many shapes x tensors keep their bind groups cached.
const MAX_CACHED_BINDINGS: usize = 64;

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
    /// [weight(C) | bias(C)]; ones and zeros when affine is off.
    affine_buf: wgpu::Buffer,
    /// [running_mean(C) | running_var(C)]; zeros and ones when not tracked.
    running_buf: wgpu::Buffer,
    /// num_batches_tracked as (low, high) u32 words.
    tracked_buf: wgpu::Buffer,
    /// Per channel vec4(mean, invstd, M2, biased var) of the last batch-statistics forward.
    stats_buf: wgpu::Buffer,
    partials_buf: Option<wgpu::Buffer>,
    params_cache: HashMap<ParamsKey, wgpu::Buffer>,
    bind_cache: HashMap<BindKey, ForwardGroups>,
}

fn storage_buffer(device: &wgpu::Device, label: &str, contents: &[u8]) -> wgpu::Buffer {
    // Zero-channel modules still get a (never read) non-empty buffer.
    let padded;
    let contents = if contents.is_empty() {
        padded = [0u8; 16];
        &padded[..]
    } else {
        contents
    };
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents,
        usage: tensor::TENSOR_USAGE,
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
                bytes: c as u64 * 16,
                limit: u64::from(u32::MAX),
            });
        }
        let device = ctx.device();
        ctx.scoped(|| {
            let mut pair = vec![1.0f32; c];
            pair.extend(std::iter::repeat_n(0.0f32, c));
            let affine_buf = storage_buffer(device, "weight|bias", bytemuck::cast_slice(&pair));
            let mut running = vec![0.0f32; c];
            running.extend(std::iter::repeat_n(1.0f32, c));
            let running_buf = storage_buffer(
                device,
                "running_mean|running_var",
                bytemuck::cast_slice(&running),
            );
            let tracked_buf = storage_buffer(device, "num_batches_tracked", &[0u8; 8]);
            let stats_buf = storage_buffer(device, "saved stats", &vec![0u8; c * 16]);
            Ok(BatchNorm {
                ctx: ctx.clone(),
                flavor,
                num_features: c,
                options,
                training: true,
                affine_buf,
                running_buf,
                tracked_buf,
                stats_buf,
                partials_buf: None,
                params_cache: HashMap::new(),
                bind_cache: HashMap::new(),
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

    /// Whether the forward on an input of this shape uses batch statistics (training, or eval
    /// without tracked running stats).
    fn uses_batch_stats(&self) -> bool {
        self.training || !self.options.track_running_stats
    }

    /// Checks an input shape the way PyTorch does, in PyTorch's order, and decides the work.
    fn plan_forward(&self, shape: &[usize], x_offset: u64) -> Result<ForwardPlan> {
        self.flavor.check_rank(shape.len())?;
        let batch_stats = self.uses_batch_stats();
        let n = shape[0];
        let c = shape[1];
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
        let numel = tensor::numel(shape)?;
        let update_running = self.training && self.options.track_running_stats;
        let momentum = self.options.momentum.map(|m| (m as f32).to_bits());
        if numel == 0 {
            // PyTorch returns an empty output before checking channels; a training forward
            // still counts the batch.
            return Ok(ForwardPlan {
                key: ParamsKey {
                    n: 0,
                    c: self.num_features as u32,
                    s: 0,
                    vec4_ok: false,
                    eps: (eps as f32).to_bits(),
                    momentum,
                },
                plan: None,
                batch_stats,
                update_running,
            });
        }
        if c != self.num_features {
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
        let bytes = numel as u64 * 4;
        let limits = self.ctx.device().limits();
        if bytes > limits.max_storage_buffer_binding_size {
            return Err(Error::TooLarge {
                what: format!("an input of shape {shape:?} in one storage binding"),
                bytes,
                limit: limits.max_storage_buffer_binding_size,
            });
        }
        let (n, c, s) = (n as u32, c as u32, s as u32);
        let vec4_ok = x_offset.is_multiple_of(16);
        let plan = Plan::new(
            n,
            c,
            s,
            vec4_ok,
            limits.max_compute_workgroups_per_dimension,
        );
        Ok(ForwardPlan {
            key: ParamsKey {
                n,
                c,
                s,
                vec4_ok,
                eps: (eps as f32).to_bits(),
                momentum,
            },
            plan: Some(plan),
            batch_stats,
            update_running,
        })
    }

    /// The params buffer for a key, created once (its contents never change afterwards, so
    /// several forwards recorded into one encoder cannot see each other's parameters).
    fn params_buffer(&mut self, fp: &ForwardPlan) -> wgpu::Buffer {
        if let Some(b) = self.params_cache.get(&fp.key) {
            return b.clone();
        }
        let mut params = match &fp.plan {
            Some(plan) => plan.params,
            None => Params {
                channels: fp.key.c,
                plane: 1,
                ..Params::default()
            },
        };
        params.eps = f32::from_bits(fp.key.eps);
        params.momentum = fp.key.momentum.map(f32::from_bits).unwrap_or(0.0);
        params.cumulative = u32::from(fp.key.momentum.is_none());
        params.update_stats = u32::from(fp.plan.is_some());
        let buffer = self
            .ctx
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("batchnorm params"),
                contents: bytemuck::bytes_of(&params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        self.params_cache.insert(fp.key, buffer.clone());
        buffer
    }

    /// The partials buffer, grown (never shrunk) to hold `count` partials.
    fn partials_buffer(&mut self, count: u64) -> wgpu::Buffer {
        let bytes = count.max(1) * 16;
        if let Some(b) = &self.partials_buf {
            if b.size() >= bytes {
                return b.clone();
            }
        }
        let buffer = self.ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("welford partials"),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        // Cached bind groups point at the old buffer.
        self.bind_cache.clear();
        self.partials_buf = Some(buffer.clone());
        buffer
    }

    fn forward_groups(&mut self, fp: &ForwardPlan, x: &Tensor, y: &Tensor) -> BindKey {
        let key = BindKey {
            params: fp.key,
            x: (x.buffer().clone(), x.offset()),
            y: (y.buffer().clone(), y.offset()),
        };
        let partials_needed = fp.plan.as_ref().map_or(1, Plan::partials);
        let partials = self.partials_buffer(partials_needed);
        if self.bind_cache.contains_key(&key) {
            return key;
        }
        if self.bind_cache.len() >= MAX_CACHED_BINDINGS {
            self.bind_cache.clear();
        }
        let params = self.params_buffer(fp);
        let device = self.ctx.device();
        let k = self.ctx.kernels();
        let tensor = fp.plan.as_ref().map(|_| TensorGroups {
            stats: k.bind_group(
                device,
                Kernel::Stats,
                &[
                    whole_binding(&params),
                    x.binding(),
                    whole_binding(&partials),
                ],
            ),
            finalize: k.bind_group(
                device,
                Kernel::FinalizeStats,
                &[
                    whole_binding(&params),
                    whole_binding(&partials),
                    whole_binding(&self.stats_buf),
                ],
            ),
            normalize: k.bind_group(
                device,
                Kernel::Normalize,
                &[
                    whole_binding(&params),
                    x.binding(),
                    y.binding(),
                    whole_binding(&self.stats_buf),
                    whole_binding(&self.affine_buf),
                    whole_binding(&self.running_buf),
                ],
            ),
        });
        let update = k.bind_group(
            device,
            Kernel::UpdateRunning,
            &[
                whole_binding(&params),
                whole_binding(&self.stats_buf),
                whole_binding(&self.running_buf),
                whole_binding(&self.tracked_buf),
            ],
        );
        self.bind_cache
            .insert(key.clone(), ForwardGroups { tensor, update });
        key
    }

    fn check_output(x: &Tensor, y: &Tensor) -> Result<()> {
        if x.shape() != y.shape() {
            return Err(Error::ShapeMismatch {
                what: "output tensor".into(),
                expected: x.shape().to_vec(),
                got: y.shape().to_vec(),
            });
        }
        if x.numel() > 0 && x.overlaps(y) {
            return Err(Error::Aliasing);
        }
        Ok(())
    }

    /// Records the forward into `encoder`, writing `y` (same shape as `x`, not overlapping it).
    /// Nothing is submitted and nothing waits: the caller submits the encoder. In training mode
    /// the running statistics are updated by the recorded commands.
    ///
    /// Parameter setters (`set_weight`, ...) write through the queue: they take effect before
    /// the next submitted command buffer, including one recorded earlier.
    pub fn encode_forward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<()> {
        let fp = self.plan_forward(x.shape(), x.offset())?;
        Self::check_output(x, y)?;
        let ctx = self.ctx.clone();
        ctx.scoped(|| {
            self.record(encoder, &fp, x, y);
            Ok(())
        })
    }

    fn record(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        fp: &ForwardPlan,
        x: &Tensor,
        y: &Tensor,
    ) {
        if fp.plan.is_none() && !fp.update_running {
            return;
        }
        let key = self.forward_groups(fp, x, y);
        let groups = &self.bind_cache[&key];
        let device = self.ctx.device();
        let k = self.ctx.kernels();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("batchnorm forward"),
            timestamp_writes: None,
        });
        if let (Some(plan), Some(tg)) = (&fp.plan, &groups.tensor) {
            if fp.batch_stats {
                kernels::stats::encode(k, device, &mut pass, plan, &tg.stats, &tg.finalize);
            }
            kernels::normalize::encode(k, device, &mut pass, plan, &tg.normalize, !fp.batch_stats);
        }
        if fp.update_running {
            kernels::update_running::encode(k, device, &mut pass, &groups.update);
        }
    }

    /// Runs the forward on `x` and returns a new output tensor; blocks until the GPU is done.
    ///
    /// Training mode (or `track_running_stats = false`) normalizes with the batch statistics
    /// (biased variance) and, in training mode, updates the running statistics; eval mode
    /// normalizes with the running statistics.
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let fp = self.plan_forward(x.shape(), x.offset())?;
        let y = Tensor::empty(&self.ctx, x.shape())?;
        self.submit(&fp, x, &y)?;
        Ok(y)
    }

    /// Like [`BatchNorm::forward`], writing into a caller-given output; blocks until done.
    pub fn forward_into(&mut self, x: &Tensor, y: &Tensor) -> Result<()> {
        let fp = self.plan_forward(x.shape(), x.offset())?;
        Self::check_output(x, y)?;
        self.submit(&fp, x, y)
    }

    fn submit(&mut self, fp: &ForwardPlan, x: &Tensor, y: &Tensor) -> Result<()> {
        let ctx = self.ctx.clone();
        ctx.scoped(|| {
            let mut encoder =
                ctx.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("batchnorm forward"),
                    });
            self.record(&mut encoder, fp, x, y);
            ctx.submit_and_wait(encoder.finish())
        })
    }

    // ----- parameters and buffers -------------------------------------------------------

    fn read_half(&self, buffer: &wgpu::Buffer, second: bool) -> Result<Vec<f32>> {
        let c = self.num_features;
        let offset = if second { c as u64 * 4 } else { 0 };
        tensor::read_f32(&self.ctx, buffer, offset, c)
    }

    fn write_half(
        &self,
        buffer: &wgpu::Buffer,
        second: bool,
        what: &str,
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
        if c == 0 {
            return Ok(());
        }
        let offset = if second { c as u64 * 4 } else { 0 };
        self.ctx.scoped(|| {
            self.ctx
                .queue()
                .write_buffer(buffer, offset, bytemuck::cast_slice(values));
            Ok(())
        })
    }

    fn require_affine(&self, what: &str) -> Result<()> {
        if self.options.affine {
            Ok(())
        } else {
            Err(Error::NotAvailable(format!(
                "{what}: the module has affine = false"
            )))
        }
    }

    fn require_tracking(&self, what: &str) -> Result<()> {
        if self.options.track_running_stats {
            Ok(())
        } else {
            Err(Error::NotAvailable(format!(
                "{what}: the module has track_running_stats = false"
            )))
        }
    }

    /// `module.weight` (None when `affine = false`).
    pub fn weight(&self) -> Result<Option<Vec<f32>>> {
        if !self.options.affine {
            return Ok(None);
        }
        self.read_half(&self.affine_buf, false).map(Some)
    }

    /// `module.bias` (None when `affine = false`).
    pub fn bias(&self) -> Result<Option<Vec<f32>>> {
        if !self.options.affine {
            return Ok(None);
        }
        self.read_half(&self.affine_buf, true).map(Some)
    }

    /// Sets `module.weight` (C values).
    pub fn set_weight(&mut self, values: &[f32]) -> Result<()> {
        self.require_affine("weight")?;
        self.write_half(&self.affine_buf, false, "weight", values)
    }

    /// Sets `module.bias` (C values).
    pub fn set_bias(&mut self, values: &[f32]) -> Result<()> {
        self.require_affine("bias")?;
        self.write_half(&self.affine_buf, true, "bias", values)
    }

    /// `module.running_mean` (None when `track_running_stats = false`).
    pub fn running_mean(&self) -> Result<Option<Vec<f32>>> {
        if !self.options.track_running_stats {
            return Ok(None);
        }
        self.read_half(&self.running_buf, false).map(Some)
    }

    /// `module.running_var` (None when `track_running_stats = false`).
    pub fn running_var(&self) -> Result<Option<Vec<f32>>> {
        if !self.options.track_running_stats {
            return Ok(None);
        }
        self.read_half(&self.running_buf, true).map(Some)
    }

    /// Sets `module.running_mean` (C values).
    pub fn set_running_mean(&mut self, values: &[f32]) -> Result<()> {
        self.require_tracking("running_mean")?;
        self.write_half(&self.running_buf, false, "running_mean", values)
    }

    /// Sets `module.running_var` (C values).
    pub fn set_running_var(&mut self, values: &[f32]) -> Result<()> {
        self.require_tracking("running_var")?;
        self.write_half(&self.running_buf, true, "running_var", values)
    }

    /// `module.num_batches_tracked` (None when `track_running_stats = false`).
    pub fn num_batches_tracked(&self) -> Result<Option<u64>> {
        if !self.options.track_running_stats {
            return Ok(None);
        }
        let bytes = tensor::read_bytes(&self.ctx, &self.tracked_buf, 0, 8)?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        Ok(Some(u64::from(words[0]) | (u64::from(words[1]) << 32)))
    }

    /// Sets `module.num_batches_tracked`.
    pub fn set_num_batches_tracked(&mut self, value: u64) -> Result<()> {
        self.require_tracking("num_batches_tracked")?;
        let words = [value as u32, (value >> 32) as u32];
        self.ctx.scoped(|| {
            self.ctx
                .queue()
                .write_buffer(&self.tracked_buf, 0, bytemuck::cast_slice(&words));
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
        Ok(self.saved_stats()?.iter().map(|s| s[0]).collect())
    }

    /// `1 / sqrt(biased batch variance + eps)` of the last forward that used batch statistics
    /// (PyTorch's `save_invstd`).
    pub fn save_invstd(&self) -> Result<Vec<f32>> {
        Ok(self.saved_stats()?.iter().map(|s| s[1]).collect())
    }

    fn saved_stats(&self) -> Result<Vec<[f32; 4]>> {
        let values = tensor::read_f32(&self.ctx, &self.stats_buf, 0, self.num_features * 4)?;
        Ok(values
            .chunks_exact(4)
            .map(|s| [s[0], s[1], s[2], s[3]])
            .collect())
    }

    /// How many (shape, tensor) bind-group sets are cached (for steady-state checks).
    pub fn cached_bindings(&self) -> usize {
        self.bind_cache.len()
    }
}

fn whole_binding(buffer: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
    buffer.as_entire_binding()
}
