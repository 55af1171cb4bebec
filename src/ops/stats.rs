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
