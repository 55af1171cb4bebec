//! Host side of `shaders/backward_finalize.wgsl`: each channel's partial sums merged in a fixed
//! order into grad_weight, grad_bias and the coefficients of grad_input, pass 2 of the
//! backward. CPU oracle: [`crate::reference::backward_finalize`].

use super::{bindings, Assembly, KernelSpec, Recorder, Statistics};

bindings! {
    /// The bindings of `backward_finalize.wgsl`.
    BackwardFinalizeBindings for BackwardFinalize {
        /// Channels, totals and eps (`ChannelParams`).
        chan: Uniform Whole "Channels",
        /// C * total_tasks partial sums from `backward_reduce`.
        partials: Read Whole "array<vec4<f32>>",
        /// save_invstd, or running_var with running statistics.
        spread: Read Whole "array<f32>",
        /// sum(dy * xhat) per channel (written); absent: not wanted.
        grad_weight: ReadWrite Optional "array<f32>",
        /// sum(dy) per channel (written); absent: not wanted.
        grad_bias: ReadWrite Optional "array<f32>",
        /// (sum(dy) / n, sum(dy * xhat) / n) per channel for `backward_input` (written).
        coef: ReadWrite Whole "array<vec2<f32>>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec::new(
    "backward_finalize",
    concat!(
        include_str!("../../shaders/backward_finalize.wgsl"),
        include_str!("../../shaders/pieces/channel_total.wgsl"),
        include_str!("../../shaders/pieces/param_grads.wgsl")
    ),
    BackwardFinalizeBindings::SPEC,
    Assembly::PerChannel,
    64,
)
.statistics();

impl BackwardFinalizeBindings {
    /// Records one workgroup per channel (`channel_grid` from the plan).
    pub fn encode(
        &self,
        rec: &mut Recorder<'_, '_>,
        channel_grid: [u32; 2],
        statistics: Statistics,
    ) {
        rec.dispatch(self, statistics, channel_grid);
    }
}

#[cfg(test)]
mod tests {
    use super::BackwardFinalizeBindings;
    use crate::ops::plan::grid;
    use crate::ops::testing::{close, context, read, run, tensor, values};
    use crate::ops::Statistics;
    use crate::reference::backward_finalize;
    use crate::workspace::Workspace;
    use crate::Tensor;

    /// Each channel's partial sums, added on the GPU, give the oracle's parameter gradients
    /// and coefficients, with saved and with running statistics, with either gradient absent.
    #[test]
    fn backward_finalize_matches_its_oracle() {
        let ctx = context(None);
        // More tasks than the workgroup has invocations, so each invocation adds several.
        let (c, tasks, count, eps) = (7usize, 150usize, 4000usize, 1e-3f32);
        let raw = values(c * tasks * 2, 5, -3.0, 3.0);
        let flat: Vec<f32> = raw.chunks(2).flat_map(|p| [p[0], p[1], 0.0, 0.0]).collect();
        let spread = values(c, 6, 0.3, 2.0);
        for statistics in [Statistics::Batch, Statistics::Running] {
            for wanted in [true, false] {
                let out: Vec<Tensor> = [c, c, 2 * c]
                    .iter()
                    .map(|&len| Tensor::zeros(&ctx, &[len]).unwrap())
                    .collect();
                let mut ws = Workspace::new(&ctx);
                let op = BackwardFinalizeBindings {
                    chan: ws.channel_params(c as u32, tasks as u64, count as u32, eps),
                    partials: tensor(&ctx, &flat, &[flat.len()]).slot(),
                    spread: tensor(&ctx, &spread, &[c]).slot(),
                    grad_weight: wanted.then(|| out[0].slot()),
                    grad_bias: wanted.then(|| out[1].slot()),
                    coef: out[2].slot(),
                };
                run(&ctx, &mut ws, |rec| {
                    op.encode(rec, grid(c as u64, 65535), statistics)
                });
                let got: Vec<Vec<f32>> = out
                    .iter()
                    .map(|t| read(&ctx, t.buffer(), t.numel()))
                    .collect();
                for ch in 0..c {
                    let sums = raw[ch * tasks * 2..(ch + 1) * tasks * 2]
                        .chunks(2)
                        .fold((0.0, 0.0), |(a, b), p| {
                            (a + f64::from(p[0]), b + f64::from(p[1]))
                        });
                    let spread = f64::from(spread[ch]);
                    let invstd = match statistics {
                        Statistics::Batch => spread,
                        Statistics::Running => 1.0 / (spread + f64::from(eps)).sqrt(),
                    };
                    let (gw, gb, k) = backward_finalize(sums, invstd, count);
                    let what = format!("{statistics:?} gradients {wanted} channel {ch}");
                    // f32 sums of 150 terms of magnitude <= 3.
                    let tol = 1e-5;
                    if wanted {
                        assert!(
                            close(got[0][ch], gw, tol),
                            "{what}: grad_weight {} {gw}",
                            got[0][ch]
                        );
                        assert!(
                            close(got[1][ch], gb, tol),
                            "{what}: grad_bias {} {gb}",
                            got[1][ch]
                        );
                    } else {
                        assert_eq!((got[0][ch], got[1][ch]), (0.0, 0.0), "{what}: not written");
                    }
                    assert!(
                        close(got[2][2 * ch], k.0, tol),
                        "{what}: coef.0 {} {}",
                        got[2][2 * ch],
                        k.0
                    );
                    assert!(
                        close(got[2][2 * ch + 1], k.1, tol),
                        "{what}: coef.1 {} {}",
                        got[2][2 * ch + 1],
                        k.1
                    );
                }
            }
        }
    }
}
