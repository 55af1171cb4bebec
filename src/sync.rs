//! SyncBN across devices (the semantics of `torch.nn.SyncBatchNorm`): statistics over the
//! union of every device's batch, exchanged through the host.
//!
//! One training step, on every device `d` with its shard `x_d`:
//! 1. `local = functional.local_stats(&x_d)?` — this device's per-channel count, mean and M2;
//! 2. exchange the locals; `merged = merge_stats(&all_locals, eps)?` — Chan's merge in device
//!    order, in f64 on the host, so every device gets bit-identical statistics;
//! 3. upload `merged` ([`MergedStats::upload`]) and run the forward with
//!    `ForwardArgs::global_stats`: it normalizes with them and updates the running buffers
//!    (unbiased variance with the global count);
//! 4. backward: a backward with `grad_weight` / `grad_bias` outputs gives this device's sums
//!    `sum(dy * xhat)` and `sum(dy)`; exchange, add with [`merge_sums`] (the parameter
//!    gradients of the whole batch), and [`backward_coefficients`] gives what
//!    `BackwardArgs::global_coefficients` takes for `grad_input`.

use crate::error::{Error, Result};
pub use crate::functional::{LocalStats, MergedStats, UploadedStats};

/// Merges the devices' shares in the order given (Chan et al.'s formula in f64); the same
/// inputs give the same bits on every host. `eps` as the module's. Errors: shares of different
/// channel counts, counts that add up past `u64::MAX`, or fewer than 2 values in all (batch
/// statistics need more than one).
pub fn merge_stats(parts: &[LocalStats], eps: f64) -> Result<MergedStats> {
    let c = parts.first().map_or(0, |p| p.mean.len());
    for (i, p) in parts.iter().enumerate() {
        if p.mean.len() != c || p.m2.len() != c {
            return Err(Error::InvalidArgument(format!(
                "partials of device {i} have {} channels, device 0's {c}",
                p.mean.len()
            )));
        }
    }
    let count = parts
        .iter()
        .try_fold(0u64, |sum, p| sum.checked_add(p.count))
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "the devices' counts add up past u64::MAX ({:?})",
                parts.iter().map(|p| p.count).collect::<Vec<_>>()
            ))
        })?;
    if count <= 1 {
        return Err(Error::InvalidArgument(format!(
            "merged statistics over {count} values per channel: batch statistics need more \
             than 1"
        )));
    }
    let mut merged = MergedStats {
        count,
        mean: vec![0.0; c],
        invstd: vec![0.0; c],
        m2: vec![0.0; c],
    };
    for ch in 0..c {
        let (mut n, mut mean, mut m2) = (0.0f64, 0.0f64, 0.0f64);
        for p in parts.iter().filter(|p| p.count > 0) {
            let (nb, mb, m2b) = (p.count as f64, f64::from(p.mean[ch]), f64::from(p.m2[ch]));
            let total = n + nb;
            let delta = mb - mean;
            mean += delta * nb / total;
            m2 += m2b + delta * delta * n * nb / total;
            n = total;
        }
        merged.mean[ch] = mean as f32;
        merged.m2[ch] = m2 as f32;
        merged.invstd[ch] = (1.0 / (m2 / n + eps).sqrt()) as f32;
    }
    Ok(merged)
}

/// The devices' `(sum(dy * xhat), sum(dy))` per channel (their `grad_weight`, `grad_bias`)
/// added in the order given, in f64: the whole batch's parameter gradients.
pub fn merge_sums(parts: &[(Vec<f32>, Vec<f32>)]) -> Result<(Vec<f32>, Vec<f32>)> {
    let c = parts.first().map_or(0, |p| p.0.len());
    if parts.iter().any(|p| p.0.len() != c || p.1.len() != c) {
        return Err(Error::InvalidArgument(
            "backward sums of different channel counts".into(),
        ));
    }
    let add = |second: bool| -> Vec<f32> {
        (0..c)
            .map(|ch| {
                parts
                    .iter()
                    .map(|p| f64::from(if second { p.1[ch] } else { p.0[ch] }))
                    .sum::<f64>() as f32
            })
            .collect()
    };
    Ok((add(false), add(true)))
}

/// `[2C]` `(sum(dy) / n, sum(dy * xhat) / n)` per channel for
/// `BackwardArgs::global_coefficients`, from the merged sums and the global count.
pub fn backward_coefficients(sum_dy_xhat: &[f32], sum_dy: &[f32], count: u64) -> Vec<f32> {
    let n = count as f64;
    sum_dy
        .iter()
        .zip(sum_dy_xhat)
        .flat_map(|(&a, &b)| [(f64::from(a) / n) as f32, (f64::from(b) / n) as f32])
        .collect()
}
