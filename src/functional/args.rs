//! The call descriptions: what one forward, backward or fold reads and writes, like the
//! arguments of `F.batch_norm`, `native_batch_norm_backward` and the eval fold.

use crate::activation::Activation;
use crate::tensor::{BatchCounter, Tensor};

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
