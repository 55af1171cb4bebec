//! Host side of `shaders/backward_input.wgsl`: grad_input in one fused elementwise pass, pass 3
//! of the backward. CPU oracle: [`crate::reference::backward_input`].

use super::{bindings, Assembly, KernelSpec, PreparedPlan, Recorder, Statistics};

bindings! {
    /// The bindings of `backward_input.wgsl`.
    BackwardInputBindings for BackwardInput, per_block geo {
        /// Channels and eps (`ChannelParams`; eps is read with running statistics).
        chan: Uniform Whole "Channels",
        /// The forward's input (not read with running statistics).
        x: Read Window "array<Item>",
        /// The gradient of the output.
        dy: Read Window "array<Item>",
        /// The gradient of the input (written).
        dx: ReadWrite Window "array<Item>",
        /// save_mean, or running_mean with running statistics.
        mean: Read Whole "array<f32>",
        /// save_invstd, or running_var with running statistics.
        spread: Read Whole "array<f32>",
        /// The forward's weight; absent: 1.
        weight: Read Optional "array<f32>",
        /// Coefficients from `backward_finalize`; absent with running statistics.
        coef: Read Optional "array<vec2<f32>>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec::new(
    "backward_input",
    concat!(
        include_str!("../../shaders/backward_input.wgsl"),
        include_str!("../../shaders/pieces/lane_coefficients.wgsl")
    ),
    BackwardInputBindings::SPEC,
    Assembly::TensorMap,
    0,
)
.statistics();

impl BackwardInputBindings {
    /// Records one dispatch per block of `prepared`.
    pub fn encode(
        &self,
        rec: &mut Recorder<'_, '_>,
        prepared: &PreparedPlan,
        statistics: Statistics,
    ) {
        rec.dispatch_blocks(self, prepared, statistics);
    }
}

#[cfg(test)]
mod tests {
    use super::BackwardInputBindings;
    use crate::ops::testing::{
        channel, close, on_every_walk, prepare, read, run, tensor, values, SHAPES,
    };
    use crate::ops::Statistics;
    use crate::reference::backward_input;
    use crate::Tensor;

    /// grad_input matches the oracle with batch statistics (coefficients given) and running
    /// statistics (none), with and without weight, on every walk.
    #[test]
    fn backward_input_matches_its_oracle_on_every_walk() {
        on_every_walk(&SHAPES, |ctx, what, seed, (n, c, s)| {
            let shape = [n, c, s];
            let x = values(n * c * s, 90 + seed, -4.0, 4.0);
            let dy = values(n * c * s, 100 + seed, -1.0, 1.0);
            let mean = values(c, 110 + seed, -0.5, 0.5);
            let spread = values(c, 120 + seed, 0.3, 2.0);
            let weight = values(c, 130 + seed, -2.0, 2.0);
            let coef = values(2 * c, 140 + seed, -0.5, 0.5);
            let eps = 1e-3f32;
            for statistics in [Statistics::Batch, Statistics::Running] {
                for affine in [true, false] {
                    let batch = statistics == Statistics::Batch;
                    let (mut ws, prepared) = prepare(ctx, (n, c, s));
                    let dx = Tensor::empty(ctx, &shape).unwrap();
                    let count = (n * s) as u32;
                    let op = BackwardInputBindings {
                        chan: ws.channel_params(c as u32, prepared.plan.total_tasks, count, eps),
                        x: tensor(ctx, &x, &shape).slot(),
                        dy: tensor(ctx, &dy, &shape).slot(),
                        dx: dx.slot(),
                        mean: tensor(ctx, &mean, &[c]).slot(),
                        spread: tensor(ctx, &spread, &[c]).slot(),
                        weight: affine.then(|| tensor(ctx, &weight, &[c]).slot()),
                        coef: batch.then(|| tensor(ctx, &coef, &[2 * c]).slot()),
                    };
                    run(ctx, &mut ws, |rec| op.encode(rec, &prepared, statistics));
                    let got = read(ctx, dx.buffer(), n * c * s);
                    for ch in 0..c {
                        let spread = f64::from(spread[ch]);
                        let invstd = if batch {
                            spread
                        } else {
                            1.0 / (spread + f64::from(eps)).sqrt()
                        };
                        let gamma = if affine { f64::from(weight[ch]) } else { 1.0 };
                        let k = (f64::from(coef[2 * ch]), f64::from(coef[2 * ch + 1]));
                        let want = backward_input(
                            &channel(&x, n, c, s, ch),
                            &channel(&dy, n, c, s, ch),
                            f64::from(mean[ch]),
                            invstd,
                            gamma,
                            batch.then_some(k),
                        );
                        let got = channel(&got, n, c, s, ch);
                        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                close(g, w, 1e-5),
                                "{what} {statistics:?} affine {affine}: channel {ch} dx[{i}] {g} {w}"
                            );
                        }
                    }
                }
            }
        });
    }
}
