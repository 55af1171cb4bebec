//! Validation, in PyTorch's order: a call that passes comes back as the work its encoding
//! takes, so nothing is checked twice; a call that fails records nothing.

use crate::device::Context;
use crate::error::{Error, Result};
use crate::ops::update_running::UpdateParams;
use crate::ops::{Activation, Epilogue, Statistics};
use crate::planner::{self, CallKind};
use crate::tensor::{DType, MemoryFormat, Tensor};
use crate::workspace::{Geometry, Workspace};

use super::*;

/// A forward that passed every check: what recording it needs to know.
#[derive(Clone, Copy)]
pub(crate) struct ForwardWork {
    pub(super) c: u32,
    /// None for an empty input.
    pub(super) geometry: Option<Geometry>,
    pub(super) count: u32,
    pub(super) eps: f32,
    pub(super) statistics: Statistics,
    pub(super) update: Option<UpdateParams>,
    pub(super) epilogue: Epilogue,
    /// Whether its f16 activations go through f32 copies (`planner::f16_through_copies`).
    pub(super) copies: bool,
}

/// What a checked backward will record.
#[derive(Clone, Copy)]
pub(crate) struct BackwardWork {
    pub(super) c: u32,
    pub(super) geometry: Option<Geometry>,
    pub(super) count: u32,
    pub(super) eps: f32,
    pub(super) statistics: Statistics,
    pub(super) epilogue: Epilogue,
    /// Whether dz = dy * act'(z) must be computed (an activation, or grad_residual wanted).
    pub(super) through_epilogue: bool,
    /// Whether its f16 activations go through f32 copies (`planner::f16_through_copies`).
    pub(super) copies: bool,
}

/// The geometry of the same call on f32 copies of its f16 activations (scratch buffers at
/// offset 0, so vec4 reads are aligned).
fn on_f32_copies(g: Option<Geometry>) -> Option<Geometry> {
    g.map(|g| Geometry {
        dtype: DType::F32,
        vec4_ok: true,
        ..g
    })
}

impl ForwardWork {
    /// This call's work on f32 copies of its f16 activations (what was checked holds for
    /// them: same shapes, fresh buffers).
    pub(super) fn on_f32_copies(&self) -> ForwardWork {
        ForwardWork {
            geometry: on_f32_copies(self.geometry),
            copies: false,
            ..*self
        }
    }
}

impl BackwardWork {
    /// As [`ForwardWork::on_f32_copies`].
    pub(super) fn on_f32_copies(&self) -> BackwardWork {
        BackwardWork {
            geometry: on_f32_copies(self.geometry),
            copies: false,
            ..*self
        }
    }
}

/// The geometry the kernels see for `x`, with every tensor in `others` (named) read or written
/// element by element alongside it: (N, C, S) for contiguous input; (N * S, C, 1) for
/// channels-last, whose rows of C values are the columns walk's home (neighbouring invocations
/// read neighbouring channels), so no kernel needs a layout of its own. Returns (C, the
/// geometry (None when empty), values per channel); TooLarge where u32 indices cannot address
/// it, MemoryFormatMismatch where an other tensor is stored differently.
pub(super) fn geometry(
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

pub(super) fn check_rank(what: &str, x: &Tensor) -> Result<()> {
    if x.shape().len() < 2 {
        return Err(Error::ShapeMismatch {
            what: format!("{what} (needs at least (N, C))"),
            expected: vec![0, 0],
            got: x.shape().to_vec(),
        });
    }
    Ok(())
}

pub(super) fn check_channels(
    ctx: &Context,
    what: &str,
    t: Option<&Tensor>,
    c: usize,
) -> Result<()> {
    if let Some(t) = t {
        t.check_context(ctx, what)?;
        t.expect_shape(what, &[c])?;
        // Parameters, statistics and running buffers are f32 in PyTorch's mixed mode too.
        t.expect_dtype(what, DType::F32)?;
    }
    Ok(())
}

/// The elementwise tensors of a call (`first` named first) share its element type.
pub(super) fn check_dtypes(first: &Tensor, others: &[(&str, Option<&Tensor>)]) -> Result<()> {
    for &(what, t) in others {
        if let Some(t) = t {
            t.expect_dtype(what, first.dtype())?;
        }
    }
    Ok(())
}

pub(super) fn check_activation(activation: Activation) -> Result<()> {
    match activation {
        Activation::LeakyRelu(slope) if !slope.is_finite() => Err(Error::InvalidArgument(format!(
            "LeakyRelu slope must be finite, got {slope}"
        ))),
        _ => Ok(()),
    }
}

pub(super) fn check_eps(eps: f64, batch_stats: bool) -> Result<()> {
    // NaN fails both.
    let ok = if batch_stats { eps > 0.0 } else { eps >= 0.0 };
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEps { eps, batch_stats })
    }
}

impl Functional {
    /// Runs every check of a forward without recording anything; what it returns lets
    /// [`Functional::encode_checked_forward`] record the call without checking it again.
    pub(crate) fn check_forward(&self, a: &ForwardArgs<'_>) -> Result<ForwardWork> {
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
            copies: false,
        };
        self.check_scratch(work.geometry, work.c)?;
        let epilogue = a.activation != Activation::Identity || a.residual.is_some();
        let kind = if a.training {
            CallKind::TrainingForward
        } else {
            CallKind::EvalForward
        };
        let copies = a.input.dtype() == DType::F16
            && planner::f16_through_copies(kind, epilogue, false, &ctx.caps());
        if copies {
            self.check_scratch(on_f32_copies(work.geometry), work.c)?;
        }
        Ok(ForwardWork { copies, ..work })
    }

    /// Every scratch buffer a call will need fits the device.
    pub(super) fn check_scratch(&self, g: Option<Geometry>, c: u32) -> Result<()> {
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

    pub(crate) fn check_backward(&self, a: &BackwardArgs<'_>) -> Result<BackwardWork> {
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
        // The tensors shaped like x.
        let like_x = [
            ("grad_output", Some(a.grad_output)),
            ("grad_input", a.grad_input),
            ("residual", a.residual),
            ("grad_residual", a.grad_residual),
        ];
        let (c32, geometry, count) = geometry(a.x, &like_x)?;
        check_dtypes(a.x, &like_x)?;
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
        let work = BackwardWork {
            c: c32,
            geometry,
            count,
            eps: eps as f32,
            statistics,
            epilogue: Epilogue::new(a.activation),
            through_epilogue,
            copies: false,
        };
        // As in the forward, but see `planner::f16_through_copies` for the epilogue.
        let copies = a.x.dtype() == DType::F16
            && planner::f16_through_copies(
                CallKind::Backward,
                through_epilogue,
                self.single_backward_plan(a, &work).is_some(),
                &ctx.caps(),
            );
        if copies {
            self.check_scratch(on_f32_copies(work.geometry), work.c)?;
        }
        Ok(BackwardWork { copies, ..work })
    }

    pub(super) fn check_fold(&self, a: &FoldArgs<'_>) -> Result<u32> {
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
}
