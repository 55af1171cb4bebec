//! Host side of `shaders/update_running.wgsl`: the running-statistics update, a separate
//! one-workgroup dispatch after the statistics. CPU oracle: [`crate::reference::update_running`].

use super::{bindings, Assembly, Kernel, KernelSpec, Recorder, Statistics};

bindings! {
    /// The bindings of `update_running.wgsl`.
    UpdateRunningBindings {
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

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "update_running",
    source: include_str!("../../shaders/update_running.wgsl"),
    bindings: UpdateRunningBindings::SPEC,
    assembly: Assembly::Single,
    has_statistics: false,
    workgroup_size: 256,
};

/// `Update` in `update_running.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct UpdateParams {
    pub channels: u32,
    pub count: u32,
    pub momentum: f32,
    pub cumulative: u32,
    pub update_stats: u32,
    pub _pad: [u32; 3],
}

impl UpdateRunningBindings {
    /// Records the update: always exactly one workgroup (see the shader).
    pub fn encode(&self, rec: &mut Recorder<'_, '_>) {
        rec.dispatch(
            Kernel::UpdateRunning,
            Statistics::Batch,
            &self.resolve(None),
            [1, 1],
        );
    }
}
