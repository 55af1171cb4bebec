//! Folding an eval-mode batch norm into the convolution before it, on the host, like
//! `torch.nn.utils.fusion.fuse_conv_bn_weights`: with the per-channel `scale` and `shift` of
//! [`crate::BatchNorm::eval_fold`] (or [`crate::Functional::run`] with [`crate::FoldArgs`]),
//! `conv_weight'[o, ...] = conv_weight[o, ...] * scale[o]` and
//! `conv_bias'[o] = conv_bias[o] * scale[o] + shift[o]`, which equals torch's
//! `(conv_bias - running_mean) * weight / sqrt(running_var + eps) + bias`.
//!
//! ```
//! use wgpu_batchnorm::fold::fuse_conv_bn_weights;
//! // Conv2d(1 -> 2, 1x1) weights (2, 1, 1, 1), no conv bias; scale and shift per out-channel.
//! let (w, b) = fuse_conv_bn_weights(&[1.0, 2.0], None, &[0.5, 3.0], &[1.0, -1.0])?;
//! assert_eq!(w, vec![0.5, 6.0]);
//! assert_eq!(b, vec![1.0, -1.0]);
//! # Ok::<(), wgpu_batchnorm::Error>(())
//! ```

use crate::error::{Error, Result};

/// The folded convolution weight and bias. `conv_weight` is laid out (C_out, ...) row-major,
/// with C_out = `scale.len()`; `conv_bias` is `[C_out]` or None (zeros).
pub fn fuse_conv_bn_weights(
    conv_weight: &[f32],
    conv_bias: Option<&[f32]>,
    scale: &[f32],
    shift: &[f32],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let c_out = scale.len();
    let mismatch = |what: &str, expected: usize, got: usize| Error::ShapeMismatch {
        what: what.to_string(),
        expected: vec![expected],
        got: vec![got],
    };
    if shift.len() != c_out {
        return Err(mismatch(
            "shift (one per conv output channel)",
            c_out,
            shift.len(),
        ));
    }
    if let Some(b) = conv_bias.filter(|b| b.len() != c_out) {
        return Err(mismatch("conv_bias", c_out, b.len()));
    }
    if c_out == 0 || !conv_weight.len().is_multiple_of(c_out) {
        return Err(Error::InvalidArgument(format!(
            "conv_weight holds {} values, not a multiple of C_out = {c_out}",
            conv_weight.len()
        )));
    }
    let per_out = conv_weight.len() / c_out;
    let weight = conv_weight
        .chunks(per_out)
        .zip(scale)
        .flat_map(|(row, &s)| row.iter().map(move |&w| w * s))
        .collect();
    let bias = (0..c_out)
        .map(|o| conv_bias.map_or(0.0, |b| b[o]) * scale[o] + shift[o])
        .collect();
    Ok((weight, bias))
}
