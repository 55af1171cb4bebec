//! Host side of `shaders/stats.wgsl`: the Welford partial (count, mean, M2) of every walk task,
//! pass 1 of the batch statistics. CPU oracle: [`crate::reference::welford_partials`].

use super::{bindings, Assembly, Kernel, KernelSpec, PreparedPlan, Recorder, Statistics};

bindings! {
    /// The bindings of `stats.wgsl`.
    StatsBindings, per_block geo {
        /// The input, (N, C, S).
        x: Read Window "array<Item>",
        /// C * total_tasks partials, channel-major (written).
        partials: ReadWrite Whole "array<vec4<f32>>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "stats",
    source: include_str!("../../shaders/stats.wgsl"),
    bindings: StatsBindings::SPEC,
    assembly: Assembly::TensorReduce,
    has_statistics: false,
    workgroup_size: 0,
};

impl StatsBindings {
    /// Records one dispatch per block of `prepared`.
    pub fn encode(&self, rec: &mut Recorder<'_, '_>, prepared: &PreparedPlan) {
        rec.dispatch_blocks(Kernel::Stats, prepared, Statistics::Batch, |at| {
            self.resolve(at)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::StatsBindings;
    use crate::ops::testing::{channel, close, context, read, run, values};
    use crate::ops::Walk;
    use crate::reference::{merge, welford_partials};
    use crate::workspace::{Geometry, Workspace};
    use crate::Tensor;

    /// Each channel's partials, merged in order, give its Welford oracle, on every walk.
    #[test]
    fn stats_partials_merge_to_each_channels_oracle_on_every_walk() {
        for walk in Walk::ALL {
            let ctx = context(Some(walk));
            for (seed, &(n, c, s)) in [
                (5usize, 3usize, 77usize),
                (4, 6, 48),
                (300, 4, 1),
                (2, 2, 5000),
            ]
            .iter()
            .enumerate()
            {
                let x = values(n * c * s, seed as u64, 10.0, 12.0);
                let xt = Tensor::from_slice(&ctx, &x, &[n, c, s]).unwrap();
                let mut ws = Workspace::new(&ctx);
                let g = Geometry {
                    n: n as u32,
                    c: c as u32,
                    s: s as u32,
                    vec4_ok: true,
                };
                let prepared = ws.plan(g);
                let partials = ws.partials(&prepared.plan);
                let op = StatsBindings {
                    x: xt.slot(),
                    partials,
                };
                run(&ctx, &mut ws, |rec| op.encode(rec, &prepared));
                let tasks = prepared.plan.total_tasks as usize;
                let got = read(&ctx, ws.partials_buffer().unwrap(), c * tasks * 4);
                for ch in 0..c {
                    let merged = got[ch * tasks * 4..(ch + 1) * tasks * 4]
                        .chunks(4)
                        .map(|p| (f64::from(p[0]), f64::from(p[1]), f64::from(p[2])))
                        .fold((0.0, 0.0, 0.0), merge);
                    let want = welford_partials(&channel(&x, n, c, s, ch));
                    let what = format!("{walk:?} {n}x{c}x{s} channel {ch}");
                    assert_eq!(merged.0, want.0, "{what}: count");
                    assert!(
                        close(merged.1 as f32, want.1, 1e-6),
                        "{what}: mean {merged:?} {want:?}"
                    );
                    assert!(
                        close(merged.2 as f32, want.2, 1e-4),
                        "{what}: M2 {merged:?} {want:?}"
                    );
                }
            }
        }
    }
}
