//! A CPU reference in f64: PyTorch's batch-norm semantics computed in double precision, the
//! oracle of this crate's tests and a way for users to check a device.
//!
//! ```
//! use wgpu_batchnorm::reference::ReferenceBatchNorm;
//! use wgpu_batchnorm::BatchNormOptions;
//! let mut bn = ReferenceBatchNorm::new(2, BatchNormOptions::default());
//! let y = bn.forward(&[1.0, 10.0, 3.0, 30.0], &[2, 2]).unwrap();
//! assert!((y[0] + 1.0).abs() < 1e-5 && (y[2] - 1.0).abs() < 1e-5);
//! assert_eq!(bn.num_batches_tracked, 1);
//! ```

use crate::batchnorm::BatchNormOptions;
use crate::error::{Error, Result};

/// (N, C, S) of a shape (N, C, *spatial); S = 1 for (N, C).
pub(crate) fn split_shape(shape: &[usize]) -> Result<(usize, usize, usize)> {
    if shape.len() < 2 {
        return Err(Error::ShapeMismatch {
            what: "reference input (needs at least (N, C))".into(),
            expected: vec![0, 0],
            got: shape.to_vec(),
        });
    }
    Ok((shape[0], shape[1], shape[2..].iter().product()))
}

fn check_len(x_len: usize, shape: &[usize], what: &str) -> Result<()> {
    let numel: usize = shape.iter().product();
    if x_len != numel {
        return Err(Error::ShapeMismatch {
            what: what.to_string(),
            expected: vec![numel],
            got: vec![x_len],
        });
    }
    Ok(())
}

/// Per-channel mean and biased variance (divide by n), in f64 with a two-pass algorithm.
pub fn batch_stats(x: &[f32], shape: &[usize]) -> Result<(Vec<f64>, Vec<f64>)> {
    check_len(x.len(), shape, "batch_stats input")?;
    let (n, c, s) = split_shape(shape)?;
    let count = (n * s) as f64;
    let mut mean = vec![0.0f64; c];
    let mut var = vec![0.0f64; c];
    for ch in 0..c {
        let mut sum = 0.0;
        for b in 0..n {
            let base = (b * c + ch) * s;
            sum += x[base..base + s].iter().map(|&v| f64::from(v)).sum::<f64>();
        }
        let m = sum / count;
        let mut m2 = 0.0;
        for b in 0..n {
            let base = (b * c + ch) * s;
            m2 += x[base..base + s]
                .iter()
                .map(|&v| (f64::from(v) - m).powi(2))
                .sum::<f64>();
        }
        mean[ch] = m;
        var[ch] = m2 / count;
    }
    Ok((mean, var))
}

/// `y = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]` in f64.
pub fn normalize(
    x: &[f32],
    shape: &[usize],
    mean: &[f64],
    var: &[f64],
    weight: &[f64],
    bias: &[f64],
    eps: f64,
) -> Result<Vec<f64>> {
    check_len(x.len(), shape, "normalize input")?;
    let (n, c, s) = split_shape(shape)?;
    let mut y = vec![0.0f64; x.len()];
    for b in 0..n {
        for ch in 0..c {
            let invstd = 1.0 / (var[ch] + eps).sqrt();
            let base = (b * c + ch) * s;
            for i in base..base + s {
                y[i] = (f64::from(x[i]) - mean[ch]) * invstd * weight[ch] + bias[ch];
            }
        }
    }
    Ok(y)
}

/// max over channels of |mean| / sqrt(var + eps): the conditioning factor the golden tolerances
/// scale with.
pub fn kappa(mean: &[f64], var: &[f64], eps: f64) -> Vec<f64> {
    mean.iter()
        .zip(var)
        .map(|(m, v)| m.abs() / (v + eps).sqrt())
        .collect()
}

/// A batch-norm module with f64 state that follows PyTorch's semantics step by step.
#[derive(Clone, Debug)]
pub struct ReferenceBatchNorm {
    /// Number of channels.
    pub num_features: usize,
    /// Constructor options.
    pub options: BatchNormOptions,
    /// Training (true) or eval mode.
    pub training: bool,
    /// weight (ones when affine = false).
    pub weight: Vec<f64>,
    /// bias (zeros when affine = false).
    pub bias: Vec<f64>,
    /// running_mean.
    pub running_mean: Vec<f64>,
    /// running_var.
    pub running_var: Vec<f64>,
    /// num_batches_tracked.
    pub num_batches_tracked: u64,
    /// Statistics (mean, biased var) that normalized the last forward.
    pub last_stats: Option<(Vec<f64>, Vec<f64>)>,
    /// Whether the last forward used batch statistics (gradients flow through them).
    pub last_used_batch_stats: bool,
}

impl ReferenceBatchNorm {
    /// A module with PyTorch's initial state (weight 1, bias 0, running 0 / 1), training mode.
    pub fn new(num_features: usize, options: BatchNormOptions) -> Self {
        ReferenceBatchNorm {
            num_features,
            options,
            training: true,
            weight: vec![1.0; num_features],
            bias: vec![0.0; num_features],
            running_mean: vec![0.0; num_features],
            running_var: vec![1.0; num_features],
            num_batches_tracked: 0,
            last_stats: None,
            last_used_batch_stats: false,
        }
    }

    /// One forward step: output in f64, buffers updated as PyTorch would. The input must be
    /// valid for the module (see [`crate::BatchNorm`] for the checks); only lengths are checked.
    pub fn forward(&mut self, x: &[f32], shape: &[usize]) -> Result<Vec<f64>> {
        check_len(x.len(), shape, "reference forward input")?;
        let (n, c, s) = split_shape(shape)?;
        if c != self.num_features && !x.is_empty() {
            return Err(Error::ChannelMismatch {
                what: "running_mean",
                input_channels: c,
                num_features: self.num_features,
            });
        }
        let track = self.options.track_running_stats;
        let use_batch = self.training || !track;
        if self.training && track {
            self.num_batches_tracked += 1;
        }
        if x.is_empty() {
            return Ok(Vec::new());
        }
        let (mean, var) = if use_batch {
            batch_stats(x, shape)?
        } else {
            (self.running_mean.clone(), self.running_var.clone())
        };
        let y = normalize(
            x,
            shape,
            &mean,
            &var,
            &self.weight,
            &self.bias,
            self.options.eps,
        )?;
        if self.training && track {
            let f = match self.options.momentum {
                Some(m) => m,
                None => 1.0 / self.num_batches_tracked as f64,
            };
            let count = (n * s) as f64;
            for ch in 0..c {
                let unbiased = var[ch] * count / (count - 1.0);
                self.running_mean[ch] = f * mean[ch] + (1.0 - f) * self.running_mean[ch];
                self.running_var[ch] = f * unbiased + (1.0 - f) * self.running_var[ch];
            }
        }
        self.last_stats = Some((mean, var));
        self.last_used_batch_stats = use_batch;
        Ok(y)
    }

    /// Gradients of the last forward (whose input was `x`) for `grad_output`.
    pub fn backward(
        &self,
        x: &[f32],
        shape: &[usize],
        grad_output: &[f32],
    ) -> Result<ReferenceGradients> {
        let (mean, var) = self.last_stats.as_ref().ok_or_else(|| {
            Error::Backward("no forward to differentiate: call forward first".into())
        })?;
        backward(
            x,
            shape,
            grad_output,
            mean,
            var,
            &self.weight,
            self.options.eps,
            self.last_used_batch_stats,
        )
    }
}

/// Gradients computed by [`backward`].
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceGradients {
    /// dL/dx.
    pub grad_input: Vec<f64>,
    /// dL/dweight = sum(dy * xhat) per channel.
    pub grad_weight: Vec<f64>,
    /// dL/dbias = sum(dy) per channel.
    pub grad_bias: Vec<f64>,
}

/// Batch-norm gradients in f64, given the statistics the forward normalized with (`mean`,
/// biased `var`). With `batch_stats` the gradient flows through the statistics:
/// `gx = w * invstd / n * (n * dy - sum(dy) - xhat * sum(dy * xhat))`; otherwise (eval with
/// running statistics) `gx = dy * w * invstd`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    shape: &[usize],
    grad_output: &[f32],
    mean: &[f64],
    var: &[f64],
    weight: &[f64],
    eps: f64,
    batch_stats: bool,
) -> Result<ReferenceGradients> {
    check_len(x.len(), shape, "backward input")?;
    check_len(grad_output.len(), shape, "backward grad_output")?;
    let (n, c, s) = split_shape(shape)?;
    let count = (n * s) as f64;
    let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let mut sum_dy = vec![0.0; c];
    let mut sum_dy_xhat = vec![0.0; c];
    for b in 0..n {
        for ch in 0..c {
            let base = (b * c + ch) * s;
            for i in base..base + s {
                let dy = f64::from(grad_output[i]);
                sum_dy[ch] += dy;
                sum_dy_xhat[ch] += dy * (f64::from(x[i]) - mean[ch]) * invstd[ch];
            }
        }
    }
    let mut grad_input = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            let base = (b * c + ch) * s;
            for i in base..base + s {
                let dy = f64::from(grad_output[i]);
                grad_input[i] = if batch_stats {
                    let xhat = (f64::from(x[i]) - mean[ch]) * invstd[ch];
                    weight[ch] * invstd[ch] / count
                        * (count * dy - sum_dy[ch] - xhat * sum_dy_xhat[ch])
                } else {
                    dy * weight[ch] * invstd[ch]
                };
            }
        }
    }
    Ok(ReferenceGradients {
        grad_input,
        grad_weight: sum_dy_xhat,
        grad_bias: sum_dy,
    })
}

// ---- per-pass oracles: one function per GPU pass, named like its shader -------------------

/// A Welford partial in f64: (count, mean, M2).
pub type Partial = (f64, f64, f64);

/// `stats.wgsl` for one task: the (count, mean, M2) of `values`, computed in two passes.
#[cfg(test)]
pub(crate) fn welford_partials(values: &[f32]) -> Partial {
    let n = values.len() as f64;
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let m2 = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>();
    (n, mean, m2)
}

/// Chan et al.'s merge of two partials (`welford_merge` in `common.wgsl`).
pub(crate) fn merge(a: Partial, b: Partial) -> Partial {
    let n = a.0 + b.0;
    if n == 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let delta = b.1 - a.1;
    (
        n,
        a.1 + delta * b.0 / n,
        a.2 + b.2 + delta * delta * a.0 * b.0 / n,
    )
}

/// `finalize_stats.wgsl` for one channel: its partials merged in order into
/// (save_mean, save_invstd, M2), with the exact value count `count`.
pub fn finalize_stats(partials: &[Partial], count: usize, eps: f64) -> (f64, f64, f64) {
    let total = partials
        .iter()
        .fold((0.0, 0.0, 0.0), |acc, &p| merge(acc, p));
    let var = total.2 / count as f64;
    (total.1, 1.0 / (var + eps).sqrt(), total.2)
}

/// `update_running.wgsl` for one channel: the new (running_mean, running_var) from the batch
/// mean and M2 of `count` values, with `factor` = momentum or 1 / num_batches_tracked.
pub fn update_running(
    running: (f64, f64),
    save_mean: f64,
    m2: f64,
    count: usize,
    factor: f64,
) -> (f64, f64) {
    (
        factor * save_mean + (1.0 - factor) * running.0,
        factor * (m2 / (count as f64 - 1.0)) + (1.0 - factor) * running.1,
    )
}

/// `backward_reduce.wgsl` merged over a channel: (sum(dy), sum(dy * (x - mean))).
#[cfg(test)]
pub(crate) fn backward_sums(x: &[f32], dy: &[f32], mean: f64) -> (f64, f64) {
    x.iter().zip(dy).fold((0.0, 0.0), |(s, sx), (&x, &g)| {
        let g = f64::from(g);
        (s + g, sx + g * (f64::from(x) - mean))
    })
}

/// `backward_finalize.wgsl` for one channel: from its merged sums (sum(dy), sum(dy * (x -
/// mean))), the saved invstd and the value count, (grad_weight, grad_bias, coef) with coef =
/// (sum(dy) / n, sum(dy * xhat) / n), the two terms `backward_input` subtracts.
pub fn backward_finalize(sums: (f64, f64), invstd: f64, count: usize) -> (f64, f64, (f64, f64)) {
    let (sum_dy, sum_dy_xhat) = (sums.0, sums.1 * invstd);
    let n = count as f64;
    (sum_dy_xhat, sum_dy, (sum_dy / n, sum_dy_xhat / n))
}

/// `backward_input.wgsl` for one channel's values: with `coef` (batch statistics)
/// `dx = weight * invstd * (dy - coef.0 - xhat * coef.1)`, `xhat = (x - mean) * invstd`;
/// without it (running statistics, where `invstd` is 1 / sqrt(running_var + eps))
/// `dx = dy * weight * invstd`.
pub fn backward_input(
    x: &[f32],
    dy: &[f32],
    mean: f64,
    invstd: f64,
    weight: f64,
    coef: Option<(f64, f64)>,
) -> Vec<f64> {
    x.iter()
        .zip(dy)
        .map(|(&x, &g)| {
            let g = f64::from(g);
            match coef {
                Some((k_dy, k_xhat)) => {
                    let xhat = (f64::from(x) - mean) * invstd;
                    weight * invstd * (g - k_dy - xhat * k_xhat)
                }
                None => g * weight * invstd,
            }
        })
        .collect()
}

/// `channel_affine.wgsl` for one channel: `(scale, shift, fold_shift)` with `scale = invstd *
/// weight`, `shift = bias` (the normalize pass's `z = (x - mean) * scale + shift`) and
/// `fold_shift = bias - mean * scale` (the eval fold's `x * scale + fold_shift`).
#[cfg(test)]
pub(crate) fn channel_affine(mean: f64, invstd: f64, weight: f64, bias: f64) -> (f64, f64, f64) {
    let scale = invstd * weight;
    (scale, bias, bias - mean * scale)
}

/// `sgd_step.wgsl` for one value, in f64: PyTorch's `torch.optim.SGD`. `buf` is None before
/// the first step with momentum; returns the new parameter (and updates `buf`).
pub fn sgd_step(
    param: f64,
    grad: f64,
    buf: &mut Option<f64>,
    (lr, momentum, dampening, weight_decay, nesterov): (f64, f64, f64, f64, bool),
) -> f64 {
    let mut d = grad + weight_decay * param;
    if momentum != 0.0 {
        let b = match *buf {
            None => d,
            Some(b) => momentum * b + (1.0 - dampening) * d,
        };
        *buf = Some(b);
        d = if nesterov { d + momentum * b } else { b };
    }
    param - lr * d
}
