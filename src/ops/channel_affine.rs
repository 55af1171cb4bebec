//! Host side of `shaders/channel_affine.wgsl`: each channel's normalize coefficients (scale =
//! invstd * weight, shift = bias), for the backward through an activation and for the eval
//! fold. CPU oracle: [`crate::reference::channel_affine`].

use super::{bindings, Assembly, KernelSpec, Recorder, Statistics};

bindings! {
    /// The bindings of `channel_affine.wgsl`.
    ChannelAffineBindings for ChannelAffine {
        /// Channels and eps (`ChannelParams`; eps is read with running statistics).
        chan: Uniform Whole "Channels",
        /// save_mean, or running_mean with running statistics.
        mean: Read Whole "array<f32>",
        /// save_invstd, or running_var with running statistics.
        spread: Read Whole "array<f32>",
        /// Per-channel scale; absent: 1.
        weight: Read Optional "array<f32>",
        /// Per-channel shift; absent: 0.
        bias: Read Optional "array<f32>",
        /// (scale, shift) per channel (written); absent: not wanted.
        affine: ReadWrite Optional "array<vec2<f32>>",
        /// scale per channel (written); absent: not wanted.
        fold_scale: ReadWrite Optional "array<f32>",
        /// bias - mean * scale per channel (written); absent: not wanted.
        fold_shift: ReadWrite Optional "array<f32>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec::new(
    "channel_affine",
    include_str!("../../shaders/channel_affine.wgsl"),
    ChannelAffineBindings::SPEC,
    Assembly::Single,
    256,
)
.statistics();

impl ChannelAffineBindings {
    /// Records the map: one workgroup (see the shader).
    pub fn encode(&self, rec: &mut Recorder<'_, '_>, statistics: Statistics) {
        rec.dispatch(self, statistics, [1, 1]);
    }
}

#[cfg(test)]
mod tests {
    use super::ChannelAffineBindings;
    use crate::ops::testing::{close, context, read, run, tensor, values};
    use crate::ops::Statistics;
    use crate::reference::channel_affine;
    use crate::workspace::Workspace;
    use crate::Tensor;

    /// (scale, shift) and the fold match the oracle with saved and running statistics, with
    /// and without weight and bias, over more channels than the workgroup has invocations.
    #[test]
    fn channel_affine_matches_its_oracle() {
        let ctx = context(None);
        let (c, eps) = (300usize, 1e-3f32);
        let mean = values(c, 1, -3.0, 3.0);
        let spread = values(c, 2, 0.2, 2.0);
        let weight = values(c, 3, -2.0, 2.0);
        let bias = values(c, 4, -1.0, 1.0);
        for statistics in [Statistics::Batch, Statistics::Running] {
            for affine in [true, false] {
                let out: Vec<Tensor> = [2 * c, c, c]
                    .iter()
                    .map(|&len| Tensor::zeros(&ctx, &[len]).unwrap())
                    .collect();
                let mut ws = Workspace::new(&ctx);
                let op = ChannelAffineBindings {
                    chan: ws.channel_params(c as u32, 1, 0, eps),
                    mean: tensor(&ctx, &mean, &[c]).slot(),
                    spread: tensor(&ctx, &spread, &[c]).slot(),
                    weight: affine.then(|| tensor(&ctx, &weight, &[c]).slot()),
                    bias: affine.then(|| tensor(&ctx, &bias, &[c]).slot()),
                    affine: Some(out[0].slot()),
                    fold_scale: Some(out[1].slot()),
                    fold_shift: Some(out[2].slot()),
                };
                run(&ctx, &mut ws, |rec| op.encode(rec, statistics));
                let got: Vec<Vec<f32>> = out
                    .iter()
                    .map(|t| read(&ctx, t.buffer(), t.numel()))
                    .collect();
                for ch in 0..c {
                    let spread = f64::from(spread[ch]);
                    let invstd = match statistics {
                        Statistics::Batch => spread,
                        Statistics::Running => 1.0 / (spread + f64::from(eps)).sqrt(),
                    };
                    let (w, b) = if affine {
                        (f64::from(weight[ch]), f64::from(bias[ch]))
                    } else {
                        (1.0, 0.0)
                    };
                    let (scale, shift, fold) = channel_affine(f64::from(mean[ch]), invstd, w, b);
                    let what = format!("{statistics:?} affine {affine} channel {ch}");
                    assert!(close(got[0][2 * ch], scale, 1e-6), "{what}: scale");
                    assert!(close(got[0][2 * ch + 1], shift, 1e-6), "{what}: shift");
                    assert!(close(got[1][ch], scale, 1e-6), "{what}: fold scale");
                    assert!(close(got[2][ch], fold, 1e-6), "{what}: fold shift");
                }
            }
        }
    }
}
