//! Host side of `shaders/backward_reduce.wgsl`: per walk task, `sum(dy)` and
//! `sum(dy * (x - mean))`, pass 1 of the backward. CPU oracle:
//! [`crate::reference::backward_sums`].

use super::{
    bindings, Assembly, Epilogue, KernelSpec, PreparedPlan, Recorder, Specialize, Statistics,
};

bindings! {
    /// The bindings of `backward_reduce.wgsl`.
    BackwardReduceBindings for BackwardReduce, per_block geo {
        /// The forward's input.
        x: Read Window "array<Item>",
        /// The gradient of the output.
        dy: Read Window "array<Item>",
        /// The mean the forward normalized with (save_mean or running_mean).
        mean: Read Whole "array<f32>",
        /// C * total_tasks partial sums, channel-major (written).
        partials: ReadWrite Whole "array<vec4<f32>>",
        /// The forward's (scale, shift) per channel (`channel_affine`), to rebuild the
        /// pre-activation; absent: no activation (dz = dy).
        affine: Read Optional "array<vec2<f32>>",
        /// The forward's residual, added before the activation; absent: none.
        residual: Read OptionalWindow "array<Item>",
        /// dy * act'(z) (written): grad_residual, and backward_input's gradient; absent: not
        /// wanted.
        dz: ReadWrite OptionalWindow "array<Item>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec::new(
    "backward_reduce",
    include_str!("../../shaders/backward_reduce.wgsl"),
    BackwardReduceBindings::SPEC,
    Assembly::TensorReduce,
    0,
)
.epilogue();

impl BackwardReduceBindings {
    /// Records one dispatch per block of `prepared`.
    pub fn encode(&self, rec: &mut Recorder<'_, '_>, prepared: &PreparedPlan, epilogue: Epilogue) {
        let special = Specialize {
            statistics: Statistics::Batch,
            epilogue,
            to_f16: false,
            channel_tensor: None,
        };
        rec.dispatch_blocks(self, prepared, special);
    }
}

#[cfg(test)]
mod tests {
    use super::BackwardReduceBindings;
    use crate::ops::testing::{
        channel, channel_partials, on_every_walk, prepare, run, tensor, values, SHAPES,
    };
    use crate::ops::Epilogue;
    use crate::reference::backward_sums;

    /// Each channel's partial sums, added, give its oracle, on every walk.
    #[test]
    fn backward_sums_match_their_oracle_on_every_walk() {
        on_every_walk(&SHAPES, |ctx, what, seed, (n, c, s)| {
            let x = values(n * c * s, 10 + seed, -3.0, 3.0);
            let dy = values(n * c * s, 20 + seed, -1.0, 1.0);
            let mean = values(c, 30 + seed, -0.5, 0.5);
            let (mut ws, prepared) = prepare(ctx, (n, c, s));
            let op = BackwardReduceBindings {
                x: tensor(ctx, &x, &[n, c, s]).slot(),
                dy: tensor(ctx, &dy, &[n, c, s]).slot(),
                mean: tensor(ctx, &mean, &[c]).slot(),
                partials: ws.partials(&prepared.plan),
                affine: None,
                residual: None,
                dz: None,
            };
            run(ctx, &mut ws, |rec| {
                op.encode(rec, &prepared, Epilogue::NONE)
            });
            for (ch, list) in channel_partials(ctx, &ws, &prepared.plan, c)
                .iter()
                .enumerate()
            {
                let (sum_dy, sum_dy_xmu) = list.iter().fold((0.0, 0.0), |(a, b), p| {
                    (a + f64::from(p[0]), b + f64::from(p[1]))
                });
                let want = backward_sums(
                    &channel(&x, n, c, s, ch),
                    &channel(&dy, n, c, s, ch),
                    f64::from(mean[ch]),
                );
                // f32 sums of n * s terms of magnitude <= 1 (dy) and <= 3.5 (dy * (x - mean)).
                let scale = (n * s) as f64;
                assert!(
                    (sum_dy - want.0).abs() <= 1e-5 * scale,
                    "{what} channel {ch}: sum(dy) {sum_dy} {}",
                    want.0
                );
                assert!(
                    (sum_dy_xmu - want.1).abs() <= 1e-5 * scale * 3.0,
                    "{what} channel {ch}: sum(dy (x - mean)) {sum_dy_xmu} {}",
                    want.1
                );
            }
        });
    }
}
