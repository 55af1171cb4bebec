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
    super::dispatch_blocks(pass, &pipeline, plan, block_groups);
}
