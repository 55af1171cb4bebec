//! Host side of `shaders/stats.wgsl`: the Welford partial (count, mean, M2) of every walk task,
//! pass 1 of the batch statistics. CPU oracle: [`crate::reference::welford_partials`].

use super::{bindings, Assembly, KernelSpec, PreparedPlan, Recorder, Statistics};

bindings! {
    /// The bindings of `stats.wgsl`.
    StatsBindings for Stats, per_block geo {
        /// The input, (N, C, S).
        x: Read Window "array<Item>",
        /// C * total_tasks partials, channel-major (written).
        partials: ReadWrite Whole "array<vec4<f32>>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec::new(
    "stats",
    include_str!("../../shaders/stats.wgsl"),
    StatsBindings::SPEC,
    Assembly::TensorReduce,
    0,
);

impl StatsBindings {
    /// Records one dispatch per block of `prepared`.
    pub fn encode(&self, rec: &mut Recorder<'_, '_>, prepared: &PreparedPlan) {
        rec.dispatch_blocks(self, prepared, Statistics::Batch);
    }
}

#[cfg(test)]
mod tests {
    use super::StatsBindings;
    use crate::ops::testing::{
        channel, channel_partials, close, on_every_walk, prepare, run, tensor, values, SHAPES,
    };
    use crate::reference::{merge, welford_partials};

    /// Each channel's partials, merged in order, give its Welford oracle, on every walk.
    #[test]
    fn stats_partials_merge_to_each_channels_oracle_on_every_walk() {
        on_every_walk(&SHAPES, |ctx, what, seed, (n, c, s)| {
            let x = values(n * c * s, seed, 10.0, 12.0);
            let (mut ws, prepared) = prepare(ctx, (n, c, s));
            let op = StatsBindings {
                x: tensor(ctx, &x, &[n, c, s]).slot(),
                partials: ws.partials(&prepared.plan),
            };
            run(ctx, &mut ws, |rec| op.encode(rec, &prepared));
            for (ch, list) in channel_partials(ctx, &ws, &prepared.plan, c)
                .iter()
                .enumerate()
            {
                let merged = list
                    .iter()
                    .map(|p| (f64::from(p[0]), f64::from(p[1]), f64::from(p[2])))
                    .fold((0.0, 0.0, 0.0), merge);
                let want = welford_partials(&channel(&x, n, c, s, ch));
                assert_eq!(merged.0, want.0, "{what} channel {ch}: count");
                assert!(
                    close(merged.1 as f32, want.1, 1e-6),
                    "{what} channel {ch}: mean {merged:?} {want:?}"
                );
                assert!(
                    close(merged.2 as f32, want.2, 1e-4),
                    "{what} channel {ch}: M2 {merged:?} {want:?}"
                );
            }
        });
    }
}
