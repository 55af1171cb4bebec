//! Host side of `shaders/normalize.wgsl`: the fused normalize-scale-shift pass.

use super::{Kernel, KernelSpec, Kernels, Plan, Slot};

/// Bindings: params, x, y, mean, spread (invstd or running_var), weight, bias.
pub(crate) const NORMALIZE: KernelSpec = KernelSpec {
    name: "normalize",
    source: include_str!("../../shaders/normalize.wgsl"),
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::ReadWrite,
        Slot::Read,
        Slot::Read,
        Slot::Read,
        Slot::Read,
    ],
    reduces: false,
    workgroup_size: super::WG_TENSOR,
};

/// Records the pass, one dispatch per block; `use_running` normalizes with the running
/// statistics (eval mode).
pub(crate) fn encode(
    kernels: &Kernels,
    device: &wgpu::Device,
    pass: &mut wgpu::ComputePass<'_>,
    plan: &Plan,
    block_groups: &[wgpu::BindGroup],
    use_running: bool,
) {
    let pipeline = kernels.pipeline(
        device,
        Kernel::Normalize,
        Some(plan),
        &[("USE_RUNNING", use_running)],
    );
    pass.set_pipeline(&pipeline);
    for (block, group) in plan.blocks.iter().zip(block_groups) {
        pass.set_bind_group(0, group, &[]);
        pass.dispatch_workgroups(block.grid[0], block.grid[1], 1);
    }
}
