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
