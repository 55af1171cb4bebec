//! Host side of `shaders/backward_reduce.wgsl`, `shaders/backward_finalize.wgsl` and
//! `shaders/backward_input.wgsl`: per-channel gradient sums, parameter gradients, and the fused
//! grad_input pass.

use super::{Kernel, KernelSpec, Kernels, Plan, Slot};

/// Bindings: params, x, dy, mean, partials.
pub(crate) const REDUCE: KernelSpec = KernelSpec {
    name: "backward_reduce",
    source: include_str!("../../shaders/backward_reduce.wgsl"),
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Read,
        Slot::Read,
        Slot::ReadWrite,
    ],
    reduces: true,
    workgroup_size: super::WG_TENSOR,
};

/// Bindings: params, partials, spread, grad_weight, grad_bias, coef.
pub(crate) const FINALIZE: KernelSpec = KernelSpec {
    name: "backward_finalize",
    source: include_str!("../../shaders/backward_finalize.wgsl"),
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Read,
        Slot::ReadWrite,
        Slot::ReadWrite,
        Slot::ReadWrite,
    ],
    reduces: true,
    workgroup_size: 64,
};

/// Bindings: params, x, dy, dx, mean, spread, weight, coef.
pub(crate) const INPUT: KernelSpec = KernelSpec {
    name: "backward_input",
    source: include_str!("../../shaders/backward_input.wgsl"),
    slots: &[
        Slot::Uniform,
        Slot::Read,
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

/// Records the two reduction passes (partial sums per block, then parameter gradients and
/// coefficients per channel).
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_sums(
    kernels: &Kernels,
    device: &wgpu::Device,
    pass: &mut wgpu::ComputePass<'_>,
    plan: &Plan,
    block_groups: &[wgpu::BindGroup],
    finalize_group: &wgpu::BindGroup,
    use_running: bool,
) {
    let reduce = kernels.pipeline(device, Kernel::BackwardReduce, Some(plan), &[]);
    super::dispatch_blocks(pass, &reduce, plan, block_groups);
    let finalize = kernels.pipeline(
        device,
        Kernel::BackwardFinalize,
        None,
        &[("USE_RUNNING", use_running)],
    );
    super::dispatch_channels(pass, &finalize, plan, finalize_group);
}

/// Records the grad_input pass, one dispatch per block.
pub(crate) fn encode_input(
    kernels: &Kernels,
    device: &wgpu::Device,
    pass: &mut wgpu::ComputePass<'_>,
    plan: &Plan,
    block_groups: &[wgpu::BindGroup],
    use_running: bool,
    has_weight: bool,
) {
    let pipeline = kernels.pipeline(
        device,
        Kernel::BackwardInput,
        Some(plan),
        &[("USE_RUNNING", use_running), ("HAS_WEIGHT", has_weight)],
    );
    super::dispatch_blocks(pass, &pipeline, plan, block_groups);
}
