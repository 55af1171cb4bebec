//! Host side of `shaders/stats.wgsl` and `shaders/finalize_stats.wgsl`: per-channel batch
//! statistics as Welford partials, merged into save_mean, save_invstd and M2 per channel.

use super::{Kernel, KernelSpec, Kernels, Plan, Slot};

/// Bindings: params, x, partials.
pub(crate) const STATS: KernelSpec = KernelSpec {
    name: "stats",
    source: include_str!("../../shaders/stats.wgsl"),
    slots: &[Slot::Uniform, Slot::Read, Slot::ReadWrite],
    reduces: true,
    workgroup_size: super::WG_TENSOR,
};

/// Bindings: params, partials, save_mean, save_invstd, m2.
pub(crate) const FINALIZE: KernelSpec = KernelSpec {
    name: "finalize_stats",
    source: include_str!("../../shaders/finalize_stats.wgsl"),
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::ReadWrite,
        Slot::ReadWrite,
        Slot::ReadWrite,
    ],
    reduces: true,
    workgroup_size: 64,
};

/// Records the statistics passes: one partials dispatch per block (`block_groups`, in plan
/// order), then the per-channel merge.
pub(crate) fn encode(
    kernels: &Kernels,
    device: &wgpu::Device,
    pass: &mut wgpu::ComputePass<'_>,
    plan: &Plan,
    block_groups: &[wgpu::BindGroup],
    finalize_group: &wgpu::BindGroup,
) {
    let stats = kernels.pipeline(device, Kernel::Stats, Some(plan), &[]);
    super::dispatch_blocks(pass, &stats, plan, block_groups);
    let finalize = kernels.pipeline(device, Kernel::FinalizeStats, None, &[]);
    super::dispatch_channels(pass, &finalize, plan, finalize_group);
}
