//! Host side of `shaders/backward_reduce.wgsl`: per walk task, `sum(dy)` and
//! `sum(dy * (x - mean))`, pass 1 of the backward. CPU oracle:
//! [`crate::reference::backward_sums`].

use super::{bindings, Assembly, Kernel, KernelSpec, PreparedPlan, Recorder, Statistics};

bindings! {
    /// The bindings of `backward_reduce.wgsl`.
    BackwardReduceBindings, per_block geo {
        /// The forward's input.
        x: Read Window "array<Item>",
        /// The gradient of the output.
        dy: Read Window "array<Item>",
        /// The mean the forward normalized with (save_mean or running_mean).
        mean: Read Whole "array<f32>",
        /// C * total_tasks partial sums, channel-major (written).
        partials: ReadWrite Whole "array<vec4<f32>>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "backward_reduce",
    source: include_str!("../../shaders/backward_reduce.wgsl"),
    bindings: BackwardReduceBindings::SPEC,
    assembly: Assembly::TensorReduce,
    has_statistics: false,
    workgroup_size: 0,
};

impl BackwardReduceBindings {
    /// Records one dispatch per block of `prepared`.
    pub fn encode(&self, rec: &mut Recorder<'_, '_>, prepared: &PreparedPlan) {
        rec.dispatch_blocks(Kernel::BackwardReduce, prepared, Statistics::Batch, |at| {
            self.resolve(at)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::BackwardReduceBindings;
    use crate::ops::testing::{channel, context, read, run, values};
    use crate::ops::Walk;
    use crate::reference::backward_sums;
    use crate::workspace::{Geometry, Workspace};
    use crate::Tensor;

    /// Each channel's partial sums, added, give its oracle, on every walk.
    #[test]
    fn backward_sums_match_their_oracle_on_every_walk() {
        for walk in Walk::ALL {
            let ctx = context(Some(walk));
            for (seed, &(n, c, s)) in [(5usize, 3usize, 77usize), (4, 6, 48), (300, 4, 1)]
                .iter()
                .enumerate()
            {
                let x = values(n * c * s, 10 + seed as u64, -3.0, 3.0);
                let dy = values(n * c * s, 20 + seed as u64, -1.0, 1.0);
                let mean = values(c, 30 + seed as u64, -0.5, 0.5);
                let t = |v: &[f32], shape: &[usize]| Tensor::from_slice(&ctx, v, shape).unwrap();
                let mut ws = Workspace::new(&ctx);
                let g = Geometry {
                    n: n as u32,
                    c: c as u32,
                    s: s as u32,
                    vec4_ok: true,
                };
                let prepared = ws.plan(g);
                let partials = ws.partials(&prepared.plan);
                let op = BackwardReduceBindings {
                    x: t(&x, &[n, c, s]).slot(),
                    dy: t(&dy, &[n, c, s]).slot(),
                    mean: t(&mean, &[c]).slot(),
                    partials,
                };
                run(&ctx, &mut ws, |rec| op.encode(rec, &prepared));
                let tasks = prepared.plan.total_tasks as usize;
                let got = read(&ctx, ws.partials_buffer().unwrap(), c * tasks * 4);
                for ch in 0..c {
                    let (sum_dy, sum_dy_xmu) = got[ch * tasks * 4..(ch + 1) * tasks * 4]
                        .chunks(4)
                        .fold((0.0, 0.0), |(a, b), p| {
                            (a + f64::from(p[0]), b + f64::from(p[1]))
                        });
                    let want = backward_sums(
                        &channel(&x, n, c, s, ch),
                        &channel(&dy, n, c, s, ch),
                        f64::from(mean[ch]),
                    );
                    let scale = (n * s) as f64;
                    let what = format!("{walk:?} {n}x{c}x{s} channel {ch}");
                    assert!(
                        (sum_dy - want.0).abs() <= 1e-5 * scale,
                        "{what}: sum(dy) {sum_dy} {}",
                        want.0
                    );
                    assert!(
                        (sum_dy_xmu - want.1).abs() <= 1e-5 * scale * 3.0,
                        "{what}: sum(dy (x - mean)) {sum_dy_xmu} {}",
                        want.1
                    );
                }
            }
        }
    }
}
