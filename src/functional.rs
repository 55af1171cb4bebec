//! The functional layer: batch norm on caller-owned tensors, like
//! `torch.nn.functional.batch_norm` and aten's `native_batch_norm` /
//! `native_batch_norm_backward`. [`crate::BatchNorm`] is built on it; a framework author can
//! build their own module the same way.
//!
//! [`Functional`] holds the scratch space and caches (create one per stream of calls and reuse
//! it). Each operation has an encode-only form that records into the caller's
//! `wgpu::CommandEncoder` and waits on nothing, and a blocking convenience that submits and
//! waits.
//!
//! ```no_run
//! use wgpu_batchnorm::{BackwardArgs, Context, ForwardArgs, Functional, RunningStats, SavedStats, Tensor};
//! let ctx = Context::new()?;
//! let x = Tensor::from_slice(&ctx, &[1., 2., 3., 4., 5., 6., 7., 8.], &[4, 2])?;
//! let y = Tensor::empty(&ctx, &[4, 2])?;
//! let (mean, invstd) = (Tensor::empty(&ctx, &[2])?, Tensor::empty(&ctx, &[2])?);
//! let running_mean = Tensor::from_slice(&ctx, &[0.0; 2], &[2])?;
//! let running_var = Tensor::from_slice(&ctx, &[1.0; 2], &[2])?;
//! let mut f = Functional::new(&ctx);
//! // F.batch_norm(x, running_mean, running_var, training=True): no weight, no bias.
//! f.forward(&ForwardArgs {
//!     running: Some(RunningStats { mean: &running_mean, var: &running_var, num_batches_tracked: None }),
//!     save_mean: Some(&mean),
//!     save_invstd: Some(&invstd),
//!     ..ForwardArgs::new(&x, &y)
//! })?;
//! let dy = Tensor::from_slice(&ctx, &[1.0; 8], &[4, 2])?;
//! let dx = Tensor::empty(&ctx, &[4, 2])?;
//! f.backward(&BackwardArgs {
//!     stats: SavedStats::Batch { save_mean: &mean, save_invstd: &invstd },
//!     grad_input: Some(&dx),
//!     ..BackwardArgs::new(&x, &dy)
//! })?;
//! # Ok::<(), wgpu_batchnorm::Error>(())
//! ```
//!
//! Encode-only calls do not open error scopes (popping one would wait on the host): a wgpu
//! validation error in them surfaces where the caller submits, through the device's
//! uncaptured-error handler. Every check this crate makes happens before anything is
//! recorded, and a rejected call records nothing.

#[cfg(not(target_arch = "wasm32"))]
use crate::context::block_on;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::ops::backward_finalize::BackwardFinalizeBindings;
use crate::ops::backward_input::BackwardInputBindings;
use crate::ops::backward_reduce::BackwardReduceBindings;
use crate::ops::backward_single::{BackwardSingleBindings, BackwardSingleEpilogueBindings};
use crate::ops::channel_affine::ChannelAffineBindings;
use crate::ops::convert::{ConvertBindings, ConvertNativeBindings, Direction};
use crate::ops::finalize_stats::FinalizeStatsBindings;
use crate::ops::forward_single::{
    ForwardSingleBindings, ForwardSingleUpdateBindings, SingleParams,
};
use crate::ops::normalize::NormalizeBindings;
use crate::ops::stats::StatsBindings;
use crate::ops::update_running::{UpdateParams, UpdateRunningBindings};
use crate::ops::{Activation, Binding, ChannelTensor, Epilogue, Specialize, Statistics};
use crate::planner::{self, CallDesc, CallKind};
use crate::tensor::{BatchCounter, DType, MemoryFormat, Tensor};
use crate::workspace::{Geometry, Workspace};

/// The running buffers a training forward updates and an eval forward normalizes with.
#[derive(Clone, Copy, Debug)]
pub struct RunningStats<'a> {
    /// `running_mean`, shape `[C]`.
    pub mean: &'a Tensor,
    /// `running_var`, shape `[C]` (unbiased).
    pub var: &'a Tensor,
    /// `num_batches_tracked`, incremented by every training forward; needed when `momentum`
    /// is `None` (the factor is then `1 / num_batches_tracked`).
    pub num_batches_tracked: Option<&'a BatchCounter>,
}

/// One forward: `F.batch_norm(input, running_mean, running_var, weight, bias, training,
/// momentum, eps)`, writing `output` and (with batch statistics) the saved statistics.
#[derive(Clone, Copy, Debug)]
pub struct ForwardArgs<'a> {
    /// (N, C, *spatial).
    pub input: &'a Tensor,
    /// Same shape as `input`, overlapping it nowhere.
    pub output: &'a Tensor,
    /// Per-channel scale `[C]`; None: 1.
    pub weight: Option<&'a Tensor>,
    /// Per-channel shift `[C]`; None: 0.
    pub bias: Option<&'a Tensor>,
    /// Running buffers: updated when `training`, normalized with when not.
    pub running: Option<RunningStats<'a>>,
    /// Batch statistics (and a running update, if `running` is given); else the running
    /// statistics, which must then be given.
    pub training: bool,
    /// Running-update factor; None: cumulative average (needs `num_batches_tracked`).
    pub momentum: Option<f64>,
    /// Added to the variance.
    pub eps: f64,
    /// Written with the batch mean `[C]` (training); None: kept in scratch space.
    pub save_mean: Option<&'a Tensor>,
    /// Written with `1 / sqrt(biased var + eps)` `[C]` (training); None: kept in scratch.
    pub save_invstd: Option<&'a Tensor>,
    /// Applied last, in the same pass: `output = activation(bn(input) [+ residual])`.
    pub activation: Activation,
    /// Added before the activation: same shape and memory format as `input`, overlapping
    /// `output` nowhere.
    pub residual: Option<&'a Tensor>,
    /// The running variance tracks the biased batch variance (M2 / n, the ONNX / Keras / Burn
    /// convention) instead of PyTorch's unbiased one. Default false.
    pub running_var_biased: bool,
    /// SyncBN: normalize with these statistics of the whole batch across devices (see
    /// [`crate::sync`]) instead of this input's own, and update the running buffers from
    /// them. Training only.
    pub global_stats: Option<GlobalStats<'a>>,
}

/// Statistics of a batch split across devices, merged by [`crate::sync::merge_stats`] and
/// uploaded: `[C]` each, and the total number of values per channel.
#[derive(Clone, Copy, Debug)]
pub struct GlobalStats<'a> {
    /// The batch mean.
    pub mean: &'a Tensor,
    /// `1 / sqrt(biased var + eps)`.
    pub invstd: &'a Tensor,
    /// The sum of squared deviations (the running variance is `m2 / (count - 1)`).
    pub m2: &'a Tensor,
    /// Values per channel over all devices.
    pub count: u64,
}

impl<'a> ForwardArgs<'a> {
    /// A training forward of `input` into `output` with PyTorch's defaults (momentum 0.1,
    /// eps 1e-5), no weight, bias or running buffers; set the rest with struct update syntax.
    pub fn new(input: &'a Tensor, output: &'a Tensor) -> Self {
        ForwardArgs {
            input,
            output,
            weight: None,
            bias: None,
            running: None,
            training: true,
            momentum: Some(0.1),
            eps: 1e-5,
            save_mean: None,
            save_invstd: None,
            activation: Activation::Identity,
            residual: None,
            running_var_biased: false,
            global_stats: None,
        }
    }
}

/// An eval-mode batch norm folded into a per-channel affine map: writes `scale = weight /
/// sqrt(running_var + eps)` and `shift = bias - running_mean * scale`.
#[derive(Clone, Copy, Debug)]
pub struct FoldArgs<'a> {
    /// `running_mean`, `[C]`.
    pub running_mean: &'a Tensor,
    /// `running_var`, `[C]`.
    pub running_var: &'a Tensor,
    /// `[C]`; None: 1.
    pub weight: Option<&'a Tensor>,
    /// `[C]`; None: 0.
    pub bias: Option<&'a Tensor>,
    /// Added to the variance (>= 0).
    pub eps: f64,
    /// Output, `[C]`.
    pub scale: &'a Tensor,
    /// Output, `[C]`.
    pub shift: &'a Tensor,
}

/// The statistics the forward normalized with.
#[derive(Clone, Copy, Debug)]
pub enum SavedStats<'a> {
    /// Batch statistics (training, or eval without running stats): the forward's `save_mean`
    /// and `save_invstd`, shape `[C]`. The gradient flows through the statistics.
    Batch {
        /// Per-channel batch mean.
        save_mean: &'a Tensor,
        /// Per-channel `1 / sqrt(biased var + eps)`.
        save_invstd: &'a Tensor,
    },
    /// Running statistics (eval with tracked buffers), shape `[C]`; they are constants.
    Running {
        /// `running_mean`.
        running_mean: &'a Tensor,
        /// `running_var`.
        running_var: &'a Tensor,
        /// `eps` (>= 0).
        eps: f64,
    },
}

/// One backward: `native_batch_norm_backward`. Every output is optional.
#[derive(Clone, Copy, Debug)]
pub struct BackwardArgs<'a> {
    /// The forward's input, (N, C, *spatial).
    pub x: &'a Tensor,
    /// dL/dy, same shape as `x`.
    pub grad_output: &'a Tensor,
    /// The forward's weight, shape `[C]`; None means 1 (affine = false).
    pub weight: Option<&'a Tensor>,
    /// The statistics the forward normalized with.
    pub stats: SavedStats<'a>,
    /// Output: dL/dx, same shape as `x`, overlapping neither `x` nor `grad_output`.
    pub grad_input: Option<&'a Tensor>,
    /// Output: dL/dweight, shape `[C]`.
    pub grad_weight: Option<&'a Tensor>,
    /// Output: dL/dbias, shape `[C]`.
    pub grad_bias: Option<&'a Tensor>,
    /// The forward's activation; the gradient flows through it.
    pub activation: Activation,
    /// The forward's bias (needed, when it had one, to rebuild the pre-activation of an
    /// activation other than Identity).
    pub bias: Option<&'a Tensor>,
    /// The forward's residual (needed, when it had one, to rebuild the pre-activation of an
    /// activation other than Identity).
    pub residual: Option<&'a Tensor>,
    /// Output: dL/dresidual = dy * act'(z), same shape as `x`.
    pub grad_residual: Option<&'a Tensor>,
    /// SyncBN: grad_input from the whole batch's sums instead of this device's: `[2C]`
    /// values (sum(dz) / n, sum(dz * xhat) / n) per channel with n over all devices, from
    /// [`crate::sync::backward_coefficients`]. `grad_weight` / `grad_bias`, if asked for, are
    /// this device's own sums (to be merged).
    pub global_coefficients: Option<&'a Tensor>,
}

impl<'a> BackwardArgs<'a> {
    /// A backward of `x` and `grad_output` with no outputs; `stats` is a placeholder
    /// (`SavedStats::Running` with `x` itself would be rejected), so set it and the outputs
    /// with struct update syntax.
    pub fn new(x: &'a Tensor, grad_output: &'a Tensor) -> Self {
        BackwardArgs {
            x,
            grad_output,
            weight: None,
            stats: SavedStats::Batch {
                save_mean: x,
                save_invstd: x,
            },
            grad_input: None,
            grad_weight: None,
            grad_bias: None,
            activation: Activation::Identity,
            bias: None,
            residual: None,
            grad_residual: None,
            global_coefficients: None,
        }
    }
}

/// Batch norm on caller-owned tensors, with its own scratch space and caches.
#[derive(Debug)]
pub struct Functional {
    ctx: Context,
    ws: Workspace,
}

/// What a checked forward will record.
/// The single-dispatch backward: without an epilogue, or through it.
enum SingleBackward {
    Plain(BackwardSingleBindings),
    Epilogue(BackwardSingleEpilogueBindings),
}

/// The single-dispatch forward: alone, or with the running update in the same dispatch.
enum SingleForward {
    Plain(ForwardSingleBindings),
    WithUpdate(ForwardSingleUpdateBindings),
}

/// A forward that passed every check: what recording it needs to know.
pub(crate) struct ForwardWork {
    c: u32,
    /// None for an empty input.
    geometry: Option<Geometry>,
    count: u32,
    eps: f32,
    statistics: Statistics,
    update: Option<UpdateParams>,
    epilogue: Epilogue,
}

/// What a checked backward will record.
struct BackwardWork {
    c: u32,
    geometry: Option<Geometry>,
    count: u32,
    eps: f32,
    statistics: Statistics,
    epilogue: Epilogue,
    /// Whether dz = dy * act'(z) must be computed (an activation, or grad_residual wanted).
    through_epilogue: bool,
}

/// The geometry the kernels see for `x`, with every tensor in `others` (named) read or written
/// element by element alongside it: (N, C, S) for contiguous input; (N * S, C, 1) for
/// channels-last, whose rows of C values are the columns walk's home (neighbouring invocations
/// read neighbouring channels), so no kernel needs a layout of its own. Returns (C, the
/// geometry (None when empty), values per channel); TooLarge where u32 indices cannot address
/// it, MemoryFormatMismatch where an other tensor is stored differently.
fn geometry(
    x: &Tensor,
    others: &[(&str, Option<&Tensor>)],
) -> Result<(u32, Option<Geometry>, u32)> {
    let shape = x.shape();
    for &(what, t) in others {
        if let Some(t) = t.filter(|t| t.memory_format() != x.memory_format()) {
            return Err(Error::MemoryFormatMismatch {
                what: what.to_string(),
                expected: x.memory_format(),
                got: t.memory_format(),
            });
        }
    }
    let too_large = |what: String, bytes: u64, limit: u64| Error::TooLarge { what, bytes, limit };
    if x.numel() as u64 > u64::from(u32::MAX) {
        return Err(too_large(
            format!("a tensor of shape {shape:?} (u32 element indices)"),
            x.size_bytes(),
            u64::from(u32::MAX) * 4,
        ));
    }
    let dim = |v: usize| {
        u32::try_from(v).map_err(|_| {
            too_large(
                format!("a dimension of shape {shape:?}"),
                v as u64,
                u64::from(u32::MAX),
            )
        })
    };
    let s: usize = shape[2..].iter().product();
    let (n, s) = match x.memory_format() {
        MemoryFormat::Contiguous => (shape[0], s),
        MemoryFormat::ChannelsLast => (shape[0] * s, 1),
    };
    let (n, c, s) = (dim(n)?, dim(shape[1])?, dim(s)?);
    let g = (x.numel() > 0).then(|| Geometry {
        n,
        c,
        s,
        dtype: x.dtype(),
        vec4_ok: std::iter::once(x)
            .chain(others.iter().filter_map(|(_, t)| *t))
            .all(|t| t.offset().is_multiple_of(16)),
    });
    Ok((c, g, n.saturating_mul(s)))
}

fn check_rank(what: &str, x: &Tensor) -> Result<()> {
    if x.shape().len() < 2 {
        return Err(Error::ShapeMismatch {
            what: format!("{what} (needs at least (N, C))"),
            expected: vec![0, 0],
            got: x.shape().to_vec(),
        });
    }
    Ok(())
}

fn check_channels(ctx: &Context, what: &str, t: Option<&Tensor>, c: usize) -> Result<()> {
    if let Some(t) = t {
        t.check_context(ctx, what)?;
        t.expect_shape(what, &[c])?;
        // Parameters, statistics and running buffers are f32 in PyTorch's mixed mode too.
        t.expect_dtype(what, DType::F32)?;
    }
    Ok(())
}

/// The elementwise tensors of a call (`first` named first) share its element type.
fn check_dtypes(first: &Tensor, others: &[(&str, Option<&Tensor>)]) -> Result<()> {
    for &(what, t) in others {
        if let Some(t) = t {
            t.expect_dtype(what, first.dtype())?;
        }
    }
    Ok(())
}

fn check_activation(activation: Activation) -> Result<()> {
    match activation {
        Activation::LeakyRelu(slope) if !slope.is_finite() => Err(Error::InvalidArgument(format!(
            "LeakyRelu slope must be finite, got {slope}"
        ))),
        _ => Ok(()),
    }
}

fn check_eps(eps: f64, batch_stats: bool) -> Result<()> {
    // NaN fails both.
    let ok = if batch_stats { eps > 0.0 } else { eps >= 0.0 };
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEps { eps, batch_stats })
    }
}

impl Functional {
    /// A functional runner for `ctx`.
    pub fn new(ctx: &Context) -> Self {
        Functional {
            ctx: ctx.clone(),
            ws: Workspace::new(ctx),
        }
    }

    /// The context this runner records for.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    fn check_forward(&self, a: &ForwardArgs<'_>) -> Result<ForwardWork> {
        let ctx = &self.ctx;
        check_rank("forward input", a.input)?;
        a.input.check_context(ctx, "input")?;
        a.output.check_context(ctx, "output")?;
        a.output.expect_shape("output tensor", a.input.shape())?;
        let shape = a.input.shape();
        // Like PyTorch, an empty input is returned before channels are compared: the
        // per-channel tensors then only have to agree with each other.
        let c = if a.input.numel() == 0 {
            [a.weight, a.bias, a.save_mean, a.save_invstd]
                .into_iter()
                .chain(a.running.iter().flat_map(|r| [Some(r.mean), Some(r.var)]))
                .flatten()
                .map(Tensor::numel)
                .next()
                .unwrap_or(shape[1])
        } else {
            shape[1]
        };
        let batch_stats = a.training;
        // With global statistics one device may hold a single value per channel; the merged
        // count is what must exceed 1.
        if batch_stats
            && a.global_stats.is_none()
            && a.input.numel() > 0
            && shape[0] * shape[2..].iter().product::<usize>() == 1
        {
            return Err(Error::TooFewValuesPerChannel {
                shape: shape.to_vec(),
            });
        }
        if let Some(g) = &a.global_stats {
            if !a.training {
                return Err(Error::InvalidArgument(
                    "global statistics are batch statistics: training must be true".into(),
                ));
            }
            if g.count <= 1 || g.count > u64::from(u32::MAX) {
                return Err(Error::InvalidArgument(format!(
                    "global statistics over {} values per channel: batch statistics need more \
                     than 1 (and at most 2^32 - 1)",
                    g.count
                )));
            }
        }
        check_eps(a.eps, batch_stats)?;
        if a.input.numel() > 0 && a.input.overlaps(a.output) {
            return Err(Error::Aliasing);
        }
        check_activation(a.activation)?;
        check_dtypes(
            a.input,
            &[("output", Some(a.output)), ("residual", a.residual)],
        )?;
        if let Some(r) = a.residual {
            r.check_context(ctx, "residual")?;
            r.expect_shape("residual (must match the input)", shape)?;
            if r.numel() > 0 && r.overlaps(a.output) {
                return Err(Error::Aliasing);
            }
        }
        check_channels(ctx, "weight", a.weight, c)?;
        check_channels(ctx, "bias", a.bias, c)?;
        check_channels(ctx, "save_mean", a.save_mean, c)?;
        check_channels(ctx, "save_invstd", a.save_invstd, c)?;
        if let (Some(m), Some(s)) = (a.save_mean, a.save_invstd) {
            if c > 0 && m.overlaps(s) {
                return Err(Error::Aliasing);
            }
        }
        if let Some(r) = &a.running {
            check_channels(ctx, "running_mean", Some(r.mean), c)?;
            check_channels(ctx, "running_var", Some(r.var), c)?;
            if let Some(counter) = r.num_batches_tracked {
                counter.check_context(ctx)?;
            }
            if a.training && a.momentum.is_none() && r.num_batches_tracked.is_none() {
                return Err(Error::InvalidArgument(
                    "momentum None (cumulative average) needs num_batches_tracked".into(),
                ));
            }
        } else if !a.training {
            return Err(Error::InvalidArgument(
                "running_mean and running_var must be given in eval mode (training = false)".into(),
            ));
        }
        let (_, geometry, local_count) = geometry(
            a.input,
            &[("output", Some(a.output)), ("residual", a.residual)],
        )?;
        if let Some(g) = &a.global_stats {
            check_channels(ctx, "global mean", Some(g.mean), c)?;
            check_channels(ctx, "global invstd", Some(g.invstd), c)?;
            check_channels(ctx, "global m2", Some(g.m2), c)?;
        }
        // The running update divides by the count of the statistics it is given.
        let count = a.global_stats.map_or(local_count, |g| g.count as u32);
        let c32 = c as u32;
        let update = match (&a.running, a.training) {
            (Some(_), true) => Some(UpdateParams {
                channels: c32,
                count,
                momentum: a.momentum.unwrap_or(0.0) as f32,
                cumulative: u32::from(a.momentum.is_none()),
                update_stats: u32::from(geometry.is_some() || a.global_stats.is_some()),
                biased: u32::from(a.running_var_biased),
                _pad: [0; 2],
            }),
            _ => None,
        };
        let work = ForwardWork {
            c: c32,
            geometry,
            count,
            eps: a.eps as f32,
            statistics: if batch_stats {
                Statistics::Batch
            } else {
                Statistics::Running
            },
            update,
            epilogue: Epilogue::new(a.activation),
        };
        self.check_scratch(work.geometry, work.c)?;
        Ok(work)
    }

    /// Runs every check of a forward without recording anything; what it returns lets
    /// [`Functional::encode_checked_forward`] record the call without checking it again.
    pub(crate) fn check(&self, args: &ForwardArgs<'_>) -> Result<ForwardWork> {
        self.check_forward(args)
    }

    /// Every scratch buffer a call will need fits the device.
    fn check_scratch(&self, g: Option<Geometry>, c: u32) -> Result<()> {
        self.ws.check_fits(
            &format!("per-channel scratch for {c} channels"),
            u64::from(c) * 8,
        )?;
        if let Some(g) = g {
            // The plan is cheap to make on the host; the buffer is what could be too large.
            let plan = crate::ops::Plan::new(g.n, g.c, g.s, g.vec4_ok, g.dtype, &self.ctx.target());
            self.ws
                .check_fits("the partials buffer", Workspace::partials_bytes(&plan))?;
        }
        Ok(())
    }

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
            let op = match fused_update {
                Some((update, r)) => SingleForward::WithUpdate(ForwardSingleUpdateBindings {
                    shape,
                    x: a.input.slot(),
                    y: a.output.slot(),
                    weight: a.weight.map(Tensor::slot),
                    bias: a.bias.map(Tensor::slot),
                    residual: a.residual.map(Tensor::slot),
                    mean: mean.clone(),
                    spread: spread.clone(),
                    upd: ws.update_params(update),
                    running_mean: r.mean.slot(),
                    running_var: r.var.slot(),
                    tracked: r.num_batches_tracked.map(|t| Binding::whole(t.buffer())),
                }),
                None => SingleForward::Plain(ForwardSingleBindings {
                    shape,
                    x: a.input.slot(),
                    y: a.output.slot(),
                    weight: a.weight.map(Tensor::slot),
                    bias: a.bias.map(Tensor::slot),
                    residual: a.residual.map(Tensor::slot),
                    mean: mean.clone(),
                    spread: spread.clone(),
                    m2: m2.clone(),
                }),
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
                tracked: r.num_batches_tracked.map(|t| Binding::whole(t.buffer())),
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
    fn single_plan(
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

    /// Whether (and how) the backward runs in one dispatch: this batch's statistics (not running
    /// ones, not SyncBN's global coefficients), the planner's choice, and through an epilogue
    /// only where the device has the epilogue kernel's 11 storage buffers.
    fn single_backward_plan(
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
        let op = if epilogue {
            // The pre-activation is rebuilt only where the activation needs it.
            let rebuild = a.activation != Activation::Identity;
            SingleBackward::Epilogue(BackwardSingleEpilogueBindings {
                shape,
                x: a.x.slot(),
                dy: a.grad_output.slot(),
                dx: a.grad_input.map(Tensor::slot),
                mean: save_mean.slot(),
                spread: save_invstd.slot(),
                weight: a.weight.map(Tensor::slot),
                bias: a.bias.map(Tensor::slot),
                residual: a.residual.filter(|_| rebuild).map(Tensor::slot),
                grad_residual: a.grad_residual.map(Tensor::slot),
                grad_weight: a.grad_weight.map(Tensor::slot),
                grad_bias: a.grad_bias.map(Tensor::slot),
            })
        } else {
            SingleBackward::Plain(BackwardSingleBindings {
                shape,
                x: a.x.slot(),
                dy: a.grad_output.slot(),
                dx: a.grad_input.map(Tensor::slot),
                mean: save_mean.slot(),
                spread: save_invstd.slot(),
                weight: a.weight.map(Tensor::slot),
                grad_weight: a.grad_weight.map(Tensor::slot),
                grad_bias: a.grad_bias.map(Tensor::slot),
            })
        };
        Some((op, how, g.c))
    }

    /// Records the forward into `encoder`: no submit, no wait. See the module docs for when
    /// validation errors surface.
    pub fn encode_forward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        args: &ForwardArgs<'_>,
    ) -> Result<()> {
        let work = self.check_forward(args)?;
        self.encode_checked_forward(encoder, args, &work)
    }

    /// [`Functional::encode_forward`] of a call `work` says passed the checks (the module
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
        let epilogue = args.activation != Activation::Identity || args.residual.is_some();
        let kind = if args.training {
            CallKind::TrainingForward
        } else {
            CallKind::EvalForward
        };
        let copies = planner::f16_through_copies(kind, epilogue, false, &self.ctx.caps());
        if args.input.dtype() == DType::F32 || !copies {
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
        let work = self.check_forward(&args32)?;
        self.record_convert(encoder, a.input, &x32, Direction::ToF32);
        if let (Some(r), Some(r32)) = (a.residual, &r32) {
            self.record_convert(encoder, r, r32, Direction::ToF32);
        }
        self.record_forward(encoder, &args32, &work);
        self.record_convert(encoder, a.output, &y32, Direction::ToF16);
        Ok(())
    }

    /// Runs the forward and blocks until it is done. Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward(&mut self, args: &ForwardArgs<'_>) -> Result<()> {
        block_on(self.forward_async(args))
    }

    /// Runs the forward and waits for it without blocking the thread (the only form on the
    /// web).
    pub async fn forward_async(&mut self, args: &ForwardArgs<'_>) -> Result<()> {
        self.check_forward(args)?;
        let ctx = self.ctx.clone();
        ctx.run_async(|encoder| self.encode_forward(encoder, args))
            .await
    }

    /// An f32 stand-in for the f16 tensor `t` (same shape and memory format) in this
    /// runner's scratch space, one per `purpose`.
    fn f32_copy(&mut self, purpose: &'static str, t: &Tensor) -> Result<Tensor> {
        let bytes = (t.numel() as u64 * 4).max(4);
        self.ws.check_buffer_fits(purpose, bytes)?;
        let buffer = self.ws.scratch(purpose, bytes).buffer;
        Ok(Tensor::over(
            &self.ctx,
            buffer,
            t.shape(),
            t.memory_format(),
        ))
    }

    /// Records the conversion between the f16 tensor `half` and its f32 copy `single`.
    pub(crate) fn record_convert(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        half: &Tensor,
        single: &Tensor,
        direction: Direction,
    ) {
        let count = half.numel() as u64;
        if count == 0 {
            return;
        }
        // Windows of at most one binding of the f32 copy, starting at multiples of 128
        // elements (256-byte offsets on both sides; f16 tensors start at offset 0).
        let limits = *self.ctx.limits();
        let chunk = (limits.max_binding / 4 / 128 * 128).max(128);
        let native = self.ctx.adapter().shader_f16;
        let ws = &mut self.ws;
        let mut start = 0u64;
        while start < count {
            let n = chunk.min(count - start);
            let chan = ws.channel_params(0, 0, n as u32, 0.0);
            let window = |t: &Tensor, size: u64| Binding {
                buffer: t.buffer().clone(),
                offset: t.offset() + start * size,
                size: (n * size).next_multiple_of(4),
            };
            let (h, f) = (window(half, 2), window(single, 4));
            let grid = crate::ops::plan::grid(n.div_ceil(2).div_ceil(256), limits.max_grid);
            ws.record(encoder, "f16 conversion", |rec| {
                if native {
                    let op = ConvertNativeBindings {
                        chan,
                        half: h,
                        single: f,
                    };
                    op.encode(rec, direction, grid);
                } else {
                    let op = ConvertBindings {
                        chan,
                        half: h,
                        single: f,
                    };
                    op.encode(rec, direction, grid);
                }
            });
            start += n;
        }
    }

    fn check_backward(&self, a: &BackwardArgs<'_>) -> Result<BackwardWork> {
        let ctx = &self.ctx;
        check_rank("backward input x", a.x)?;
        let shape = a.x.shape();
        let c = shape[1];
        a.x.check_context(ctx, "x")?;
        a.grad_output.check_context(ctx, "grad_output")?;
        a.grad_output.expect_shape("grad_output", shape)?;
        if let Some(g) = a.grad_input {
            g.check_context(ctx, "grad_input")?;
            g.expect_shape("grad_input", shape)?;
            if a.x.numel() > 0 && (g.overlaps(a.x) || g.overlaps(a.grad_output)) {
                return Err(Error::Aliasing);
            }
        }
        check_channels(ctx, "weight", a.weight, c)?;
        check_channels(ctx, "grad_weight", a.grad_weight, c)?;
        check_channels(ctx, "grad_bias", a.grad_bias, c)?;
        let (statistics, eps) = match a.stats {
            SavedStats::Batch {
                save_mean,
                save_invstd,
            } => {
                check_channels(ctx, "save_mean", Some(save_mean), c)?;
                check_channels(ctx, "save_invstd", Some(save_invstd), c)?;
                // eps is folded into save_invstd and not read.
                (Statistics::Batch, 0.0)
            }
            SavedStats::Running {
                running_mean,
                running_var,
                eps,
            } => {
                check_channels(ctx, "running_mean", Some(running_mean), c)?;
                check_channels(ctx, "running_var", Some(running_var), c)?;
                check_eps(eps, false)?;
                (Statistics::Running, eps)
            }
        };
        if let (Some(gw), Some(gb)) = (a.grad_weight, a.grad_bias) {
            if c > 0 && gw.overlaps(gb) {
                return Err(Error::Aliasing);
            }
        }
        check_activation(a.activation)?;
        check_channels(ctx, "bias", a.bias, c)?;
        for (what, t) in [("residual", a.residual), ("grad_residual", a.grad_residual)] {
            if let Some(t) = t {
                t.check_context(ctx, what)?;
                t.expect_shape(&format!("{what} (must match x)"), shape)?;
            }
        }
        if let Some(gr) = a.grad_residual.filter(|t| t.numel() > 0) {
            let reads = [Some(a.x), Some(a.grad_output), a.residual, a.grad_input];
            if reads.into_iter().flatten().any(|t| t.overlaps(gr)) {
                return Err(Error::Aliasing);
            }
        }
        let (c32, geometry, count) = geometry(
            a.x,
            &[
                ("grad_output", Some(a.grad_output)),
                ("grad_input", a.grad_input),
                ("residual", a.residual),
                ("grad_residual", a.grad_residual),
            ],
        )?;
        check_dtypes(
            a.x,
            &[
                ("grad_output", Some(a.grad_output)),
                ("grad_input", a.grad_input),
                ("residual", a.residual),
                ("grad_residual", a.grad_residual),
            ],
        )?;
        if let Some(k) = a.global_coefficients {
            k.check_context(ctx, "global_coefficients")?;
            k.expect_shape("global_coefficients (two per channel)", &[2 * c])?;
            k.expect_dtype("global_coefficients", DType::F32)?;
        }
        let through_epilogue = a.activation != Activation::Identity || a.grad_residual.is_some();
        self.check_scratch(geometry, c32)?;
        if through_epilogue && a.grad_residual.is_none() && a.grad_input.is_some() {
            self.ws
                .check_fits("the dz scratch buffer", a.x.size_bytes())?;
        }
        Ok(BackwardWork {
            c: c32,
            geometry,
            count,
            eps: eps as f32,
            statistics,
            epilogue: Epilogue::new(a.activation),
            through_epilogue,
        })
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

    /// Records the backward into `encoder`: no submit, no wait.
    pub fn encode_backward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        args: &BackwardArgs<'_>,
    ) -> Result<()> {
        let work = self.check_backward(args)?;
        // As in the forward, but see `planner::f16_through_copies` for the epilogue.
        let copies = args.x.dtype() == DType::F16
            && planner::f16_through_copies(
                CallKind::Backward,
                work.through_epilogue,
                self.single_backward_plan(args, &work).is_some(),
                &self.ctx.caps(),
            );
        if !copies {
            self.record_backward(encoder, args, &work);
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
        let work = self.check_backward(&args32)?;
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

    /// Runs the backward and blocks until it is done. Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn backward(&mut self, args: &BackwardArgs<'_>) -> Result<()> {
        block_on(self.backward_async(args))
    }

    /// Runs the backward and waits for it without blocking the thread.
    pub async fn backward_async(&mut self, args: &BackwardArgs<'_>) -> Result<()> {
        self.check_backward(args)?;
        let ctx = self.ctx.clone();
        ctx.run_async(|encoder| self.encode_backward(encoder, args))
            .await
    }

    /// SyncBN, step 1: this device's per-channel batch mean and M2 (sum of squared
    /// deviations) of `input`, written to `mean` and `m2` (`[C]` f32), to be exchanged and
    /// merged with [`crate::sync::merge_stats`]. Records only.
    pub fn encode_local_stats(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        input: &Tensor,
        mean: &Tensor,
        m2: &Tensor,
    ) -> Result<()> {
        let ctx = self.ctx.clone();
        check_rank("local statistics input", input)?;
        input.check_context(&ctx, "input")?;
        let c = input.shape()[1];
        check_channels(&ctx, "mean", Some(mean), c)?;
        check_channels(&ctx, "m2", Some(m2), c)?;
        if c > 0 && mean.overlaps(m2) {
            return Err(Error::Aliasing);
        }
        let (c32, geometry_of_input, count) = geometry(input, &[])?;
        self.check_scratch(geometry_of_input, c32)?;
        let Some(mut g) = geometry_of_input else {
            // No values: the merge identity (count 0) has mean 0 and M2 0.
            for t in [mean, m2] {
                if c > 0 {
                    encoder.clear_buffer(t.buffer(), t.offset(), Some(t.size_bytes()));
                }
            }
            return Ok(());
        };
        // f16 without SHADER_F16: the statistics of an f32 copy, as the forward takes them.
        let x32;
        let input = if input.dtype() == DType::F16 && !ctx.adapter().shader_f16 {
            x32 = self.f32_copy("f16 input", input)?;
            let (_, g32, _) = geometry(&x32, &[])?;
            self.check_scratch(g32, c32)?;
            g = g32.ok_or_else(|| {
                Error::InvalidArgument("the f32 copy of a non-empty input is empty".into())
            })?;
            self.record_convert(encoder, input, &x32, Direction::ToF32);
            &x32
        } else {
            input
        };
        let ws = &mut self.ws;
        let prepared = ws.plan(g);
        let plan = &prepared.plan;
        let partials = ws.partials(plan);
        let stats = StatsBindings {
            x: input.slot(),
            partials: partials.clone(),
        };
        let finalize = FinalizeStatsBindings {
            chan: ws.channel_params(c32, plan.total_tasks, count, 1.0),
            partials,
            save_mean: mean.slot(),
            save_invstd: ws.scratch("local invstd", u64::from(c32) * 4),
            m2: m2.slot(),
        };
        ws.record(encoder, "batchnorm local statistics", |rec| {
            stats.encode(rec, &prepared);
            finalize.encode(rec, prepared.plan.channel_grid);
        });
        Ok(())
    }

    /// [`Functional::encode_local_stats`], read back: this device's share of a SyncBN batch.
    /// Blocks; native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn local_stats(&mut self, input: &Tensor) -> Result<crate::sync::LocalStats> {
        block_on(self.local_stats_async(input))
    }

    /// Async form of [`Functional::local_stats`].
    pub async fn local_stats_async(&mut self, input: &Tensor) -> Result<crate::sync::LocalStats> {
        let c = input.shape().get(1).copied().unwrap_or(0);
        let (mean, m2) = (
            Tensor::empty(&self.ctx, &[c])?,
            Tensor::empty(&self.ctx, &[c])?,
        );
        let ctx = self.ctx.clone();
        ctx.run_async(|encoder| self.encode_local_stats(encoder, input, &mean, &m2))
            .await?;
        let s: usize = input.shape().iter().skip(2).product();
        Ok(crate::sync::LocalStats {
            count: (input.shape()[0] * s) as u64,
            mean: mean.to_host_async().await?,
            m2: m2.to_host_async().await?,
        })
    }

    fn check_fold(&self, a: &FoldArgs<'_>) -> Result<u32> {
        let ctx = &self.ctx;
        let c = a.running_mean.numel();
        check_channels(ctx, "running_mean", Some(a.running_mean), c)?;
        check_channels(ctx, "running_var", Some(a.running_var), c)?;
        check_channels(ctx, "weight", a.weight, c)?;
        check_channels(ctx, "bias", a.bias, c)?;
        check_channels(ctx, "scale", Some(a.scale), c)?;
        check_channels(ctx, "shift", Some(a.shift), c)?;
        check_eps(a.eps, false)?;
        let reads = [Some(a.running_mean), Some(a.running_var), a.weight, a.bias];
        if c > 0
            && (a.scale.overlaps(a.shift)
                || reads
                    .into_iter()
                    .flatten()
                    .any(|t| t.overlaps(a.scale) || t.overlaps(a.shift)))
        {
            return Err(Error::Aliasing);
        }
        u32::try_from(c).map_err(|_| Error::TooLarge {
            what: format!("{c} channels"),
            bytes: c as u64 * 4,
            limit: u64::from(u32::MAX) * 4,
        })
    }

    fn record_fold(&mut self, encoder: &mut wgpu::CommandEncoder, a: &FoldArgs<'_>, c: u32) {
        if c == 0 {
            return;
        }
        let ws = &mut self.ws;
        let op = ChannelAffineBindings {
            chan: ws.channel_params(c, 1, 0, a.eps as f32),
            mean: a.running_mean.slot(),
            spread: a.running_var.slot(),
            weight: a.weight.map(Tensor::slot),
            bias: a.bias.map(Tensor::slot),
            affine: None,
            fold_scale: Some(a.scale.slot()),
            fold_shift: Some(a.shift.slot()),
        };
        ws.record(encoder, "batchnorm eval fold", |rec| {
            op.encode(rec, Statistics::Running)
        });
    }

    /// Records the eval fold into `encoder`: no submit, no wait.
    pub fn encode_fold(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        args: &FoldArgs<'_>,
    ) -> Result<()> {
        let c = self.check_fold(args)?;
        self.record_fold(encoder, args, c);
        Ok(())
    }

    /// The eval fold, waiting for it: `scale = weight / sqrt(running_var + eps)`, `shift =
    /// bias - running_mean * scale`, so that eval batch norm is `x * scale + shift` per channel
    /// (see [`crate::fold::fuse_conv_bn_weights`] to fold it into a convolution). Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn fold(&mut self, args: &FoldArgs<'_>) -> Result<()> {
        block_on(self.fold_async(args))
    }

    /// Async form of [`Functional::fold`].
    pub async fn fold_async(&mut self, args: &FoldArgs<'_>) -> Result<()> {
        let c = self.check_fold(args)?;
        let ctx = self.ctx.clone();
        ctx.run_async(|encoder| {
            self.record_fold(encoder, args, c);
            Ok(())
        })
        .await
    }

    /// Cached bind groups (steady-state checks).
    #[doc(hidden)]
    pub fn cached_bind_groups(&self) -> usize {
        self.ws.cached_bind_groups()
    }

    /// GPU buffers created so far (steady-state checks).
    #[doc(hidden)]
    pub fn buffers_created(&self) -> usize {
        self.ws.buffers_created()
    }

    /// Dispatches (and their workgroups) recorded so far: tests hold
    /// [`crate::Context::plan_call`]'s descriptions against what is recorded.
    #[doc(hidden)]
    pub fn dispatches_recorded(&self) -> (u64, u64) {
        let t = self.ws.tally();
        (t.dispatches, t.workgroups)
    }
}

/// The functional backward under its earlier name: [`Functional::encode_backward`] and
/// [`Functional::backward`] as `encode` and `run`.
#[derive(Debug)]
pub struct BatchNormBackward(Functional);

impl BatchNormBackward {
    /// A backward runner for `ctx`.
    pub fn new(ctx: &Context) -> Self {
        BatchNormBackward(Functional::new(ctx))
    }

    /// Records the backward into `encoder` (no submit, no wait).
    pub fn encode(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        args: &BackwardArgs<'_>,
    ) -> Result<()> {
        self.0.encode_backward(encoder, args)
    }

    /// Runs the backward and waits for it. Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run(&mut self, args: &BackwardArgs<'_>) -> Result<()> {
        self.0.backward(args)
    }
}
