//! Host side of `shaders/finalize_stats.wgsl`: each channel's partials merged in a fixed order
//! into save_mean, save_invstd and M2, pass 2 of the batch statistics. CPU oracle:
//! [`crate::reference::finalize_stats`].

use super::{bindings, Assembly, Kernel, KernelSpec, Recorder, Statistics};

bindings! {
    /// The bindings of `finalize_stats.wgsl`.
    FinalizeStatsBindings {
        /// Channels, totals and eps (`ChannelParams`).
        chan: Uniform Whole "Channels",
        /// C * total_tasks partials from `stats`.
        partials: Read Whole "array<vec4<f32>>",
        /// Batch mean per channel (written).
        save_mean: ReadWrite Whole "array<f32>",
        /// 1 / sqrt(biased variance + eps) per channel (written).
        save_invstd: ReadWrite Whole "array<f32>",
        /// M2 (sum of squared deviations) per channel, for the running variance (written).
        m2: ReadWrite Whole "array<f32>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "finalize_stats",
    source: include_str!("../../shaders/finalize_stats.wgsl"),
    bindings: FinalizeStatsBindings::SPEC,
    assembly: Assembly::PerChannel,
    has_statistics: false,
    workgroup_size: 64,
};

impl FinalizeStatsBindings {
    /// Records one workgroup per channel (`channel_grid` from the plan).
    pub fn encode(&self, rec: &mut Recorder<'_, '_>, channel_grid: [u32; 2]) {
        rec.dispatch(
            Kernel::FinalizeStats,
            Statistics::Batch,
            &self.resolve(None),
            channel_grid,
        );
    }
}
