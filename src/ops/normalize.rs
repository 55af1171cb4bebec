//! Host side of `shaders/normalize.wgsl`: the fused normalize-scale-shift pass,
//! `y = (x - mean) * (invstd * weight) + bias`. CPU oracle: [`crate::reference::normalize`].

use super::{bindings, Assembly, KernelSpec, PreparedPlan, Recorder, Specialize};

bindings! {
    /// The bindings of `normalize.wgsl`.
    NormalizeBindings for Normalize, per_block geo {
        /// Channels and eps (`ChannelParams`; eps is read with running statistics).
        chan: Uniform Whole "Channels",
        /// The input.
        x: Read Window "array<Item>",
        /// The output, same shape (written).
        y: ReadWrite Window "array<Item>",
        /// save_mean, or running_mean with running statistics.
        mean: Read Whole "array<f32>",
        /// save_invstd, or running_var with running statistics.
        spread: Read Whole "array<f32>",
        /// Per-channel scale; absent: 1 (affine = false).
        weight: Read Optional "array<f32>",
        /// Per-channel shift; absent: 0.
        bias: Read Optional "array<f32>",
        /// Added before the activation; absent: nothing added.
        residual: Read OptionalWindow "array<Item>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec::new(
    "normalize",
    concat!(
        include_str!("../../shaders/normalize.wgsl"),
        include_str!("../../shaders/pieces/lane_coefficients.wgsl")
    ),
    NormalizeBindings::SPEC,
    Assembly::TensorMap,
    0,
)
.statistics()
.epilogue();

impl NormalizeBindings {
    /// Records one dispatch per block of `prepared`.
    pub fn encode(&self, rec: &mut Recorder<'_, '_>, prepared: &PreparedPlan, special: Specialize) {
        rec.dispatch_blocks(self, prepared, special);
    }
}

#[cfg(test)]
mod tests {
    use super::NormalizeBindings;
    use crate::ops::testing::{close, on_every_walk, prepare, read, run, tensor, values, SHAPES};
    use crate::ops::Statistics;
    use crate::reference::normalize;
    use crate::Tensor;

    fn wide(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&v| f64::from(v)).collect()
    }

    /// y matches the oracle with batch and with running statistics, with and without
    /// weight and bias, on every walk.
    #[test]
    fn normalize_matches_its_oracle_on_every_walk() {
        on_every_walk(&SHAPES, |ctx, what, seed, (n, c, s)| {
            let shape = [n, c, s];
            let x = values(n * c * s, 40 + seed, -5.0, 7.0);
            let mean = values(c, 50 + seed, -1.0, 1.0);
            let spread = values(c, 60 + seed, 0.3, 2.0);
            let weight = values(c, 70 + seed, -2.0, 2.0);
            let bias = values(c, 80 + seed, -1.0, 1.0);
            let eps = 1e-3f32;
            for statistics in [Statistics::Batch, Statistics::Running] {
                for affine in [true, false] {
                    let (mut ws, prepared) = prepare(ctx, (n, c, s));
                    let y = Tensor::empty(ctx, &shape).unwrap();
                    let count = (n * s) as u32;
                    let op = NormalizeBindings {
                        chan: ws.channel_params(c as u32, prepared.plan.total_tasks, count, eps),
                        x: tensor(ctx, &x, &shape).slot(),
                        y: y.slot(),
                        mean: tensor(ctx, &mean, &[c]).slot(),
                        spread: tensor(ctx, &spread, &[c]).slot(),
                        weight: affine.then(|| tensor(ctx, &weight, &[c]).slot()),
                        bias: affine.then(|| tensor(ctx, &bias, &[c]).slot()),
                        residual: None,
                    };
                    run(ctx, &mut ws, |rec| {
                        op.encode(rec, &prepared, statistics.into())
                    });
                    let got = read(ctx, y.buffer(), n * c * s);
                    // The oracle takes a variance: `spread` is running_var (eps added), or
                    // save_invstd, whose variance 1 / invstd^2 gives it back with eps 0.
                    let (var, eps) = match statistics {
                        Statistics::Running => (wide(&spread), f64::from(eps)),
                        Statistics::Batch => {
                            (spread.iter().map(|&v| f64::from(v).powi(-2)).collect(), 0.0)
                        }
                    };
                    let (w, b) = if affine {
                        (wide(&weight), wide(&bias))
                    } else {
                        (vec![1.0; c], vec![0.0; c])
                    };
                    let want = normalize(&x, &shape, &wide(&mean), &var, &w, &b, eps).unwrap();
                    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            close(g, w, 2e-6),
                            "{what} {statistics:?} affine {affine}: y[{i}] {g} {w}"
                        );
                    }
                }
            }
        });
    }
}
