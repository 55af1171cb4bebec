//! Host side of `shaders/update_running.wgsl`: the running-statistics update, a separate
//! one-workgroup dispatch after the statistics. CPU oracle: [`crate::reference::update_running`].

use super::{bindings, Assembly, KernelSpec, Recorder, Statistics};

bindings! {
    /// The bindings of `update_running.wgsl`.
    UpdateRunningBindings for UpdateRunning {
        /// Channels, count and momentum (`UpdateParams`).
        upd: Uniform Whole "Update",
        /// Batch mean per channel.
        save_mean: Read Whole "array<f32>",
        /// M2 per channel (the unbiased variance is M2 / (n - 1)).
        m2: Read Whole "array<f32>",
        /// Updated in place.
        running_mean: ReadWrite Whole "array<f32>",
        /// Updated in place.
        running_var: ReadWrite Whole "array<f32>",
        /// num_batches_tracked as two u32 words (low, high), incremented; absent: not
        /// counted (then momentum must be given).
        tracked: ReadWrite Optional "array<u32, 2>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec::new(
    "update_running",
    include_str!("../../shaders/update_running.wgsl"),
    UpdateRunningBindings::SPEC,
    Assembly::Single,
    256,
);

/// `Update` in `update_running.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct UpdateParams {
    pub channels: u32,
    pub count: u32,
    pub momentum: f32,
    pub cumulative: u32,
    pub update_stats: u32,
    /// 1: the running variance tracks the biased variance M2 / n.
    pub biased: u32,
    pub _pad: [u32; 2],
}

impl UpdateRunningBindings {
    /// Records the update: always exactly one workgroup (see the shader).
    pub fn encode(&self, rec: &mut Recorder<'_, '_>) {
        rec.dispatch(self, Statistics::Batch, [1, 1]);
    }
}

#[cfg(test)]
mod tests {
    use super::{UpdateParams, UpdateRunningBindings};
    use crate::ops::testing::{close, context, read, run, values};
    use crate::ops::Binding;
    use crate::reference::update_running;
    use crate::workspace::Workspace;
    use crate::{BatchCounter, Tensor};

    /// Momentum and cumulative updates match the oracle; the counter increments.
    #[test]
    fn update_running_matches_its_oracle() {
        let ctx = context(None);
        let (c, count) = (300usize, 17usize);
        let mean = values(c, 1, -2.0, 2.0);
        let m2 = values(c, 2, 0.0, 30.0);
        let rm0 = values(c, 3, -1.0, 1.0);
        let rv0 = values(c, 4, 0.5, 2.0);
        for (momentum, tracked) in [(Some(0.3f32), 0u64), (None, 4)] {
            let t = |v: &[f32]| Tensor::from_slice(&ctx, v, &[c]).unwrap();
            let (rm, rv) = (t(&rm0), t(&rv0));
            let counter = BatchCounter::new(&ctx).unwrap();
            counter.set(tracked).unwrap();
            let mut ws = Workspace::new(&ctx);
            let op = UpdateRunningBindings {
                upd: ws.update_params(UpdateParams {
                    channels: c as u32,
                    count: count as u32,
                    momentum: momentum.unwrap_or(0.0),
                    cumulative: u32::from(momentum.is_none()),
                    update_stats: 1,
                    biased: 0,
                    _pad: [0; 2],
                }),
                save_mean: t(&mean).slot(),
                m2: t(&m2).slot(),
                running_mean: rm.slot(),
                running_var: rv.slot(),
                tracked: Some(Binding::whole(counter.buffer())),
            };
            run(&ctx, &mut ws, |rec| op.encode(rec));
            let factor = momentum.map_or(1.0 / (tracked + 1) as f64, f64::from);
            let (got_m, got_v) = (read(&ctx, rm.buffer(), c), read(&ctx, rv.buffer(), c));
            for ch in 0..c {
                let f = |v: &[f32]| f64::from(v[ch]);
                let (want_m, want_v) =
                    update_running((f(&rm0), f(&rv0)), f(&mean), f(&m2), count, factor);
                assert!(close(got_m[ch], want_m, 1e-6), "running_mean {ch}");
                assert!(close(got_v[ch], want_v, 1e-6), "running_var {ch}");
            }
            assert_eq!(counter.get().unwrap(), tracked + 1);
        }
    }
}
