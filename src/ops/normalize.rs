//! Host side of `shaders/normalize.wgsl`: the fused normalize-scale-shift pass,
//! `y = (x - mean) * (invstd * weight) + bias`. CPU oracle: [`crate::reference::normalize`].

use super::{bindings, Assembly, Kernel, KernelSpec, PreparedPlan, Recorder, Statistics};

bindings! {
    /// The bindings of `normalize.wgsl`.
    NormalizeBindings, per_block geo {
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
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "normalize",
    source: include_str!("../../shaders/normalize.wgsl"),
    bindings: NormalizeBindings::SPEC,
    assembly: Assembly::TensorMap,
    has_statistics: true,
    workgroup_size: 0,
};

impl NormalizeBindings {
    /// Records one dispatch per block of `prepared`.
    pub fn encode(
        &self,
        rec: &mut Recorder<'_, '_>,
        prepared: &PreparedPlan,
        statistics: Statistics,
    ) {
        rec.dispatch_blocks(Kernel::Normalize, prepared, statistics, |at| {
            self.resolve(at)
        });
    }
}
