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

/// Records the two reduction passes (sums, then parameter gradients and coefficients).
pub(crate) fn encode_sums(
    kernels: &Kernels,
    device: &wgpu::Device,
    pass: &mut wgpu::ComputePass<'_>,
    plan: &Plan,
    reduce_group: &wgpu::BindGroup,
    finalize_group: &wgpu::BindGroup,
    use_running: bool,
) {
    let reduce = kernels.pipeline(device, Kernel::BackwardReduce, plan.vec4, &[]);
    pass.set_pipeline(&reduce);
    pass.set_bind_group(0, reduce_group, &[]);
    pass.dispatch_workgroups(plan.task_grid[0], plan.task_grid[1], 1);

    let finalize = kernels.pipeline(
        device,
        Kernel::BackwardFinalize,
        false,
        &[("USE_RUNNING", use_running)],
    );
    pass.set_pipeline(&finalize);
    pass.set_bind_group(0, finalize_group, &[]);
    pass.dispatch_workgroups(plan.channel_grid[0], plan.channel_grid[1], 1);
}

/// Records the grad_input pass.
pub(crate) fn encode_input(
    kernels: &Kernels,
    device: &wgpu::Device,
    pass: &mut wgpu::ComputePass<'_>,
    plan: &Plan,
    group: &wgpu::BindGroup,
    use_running: bool,
    has_weight: bool,
) {
    let pipeline = kernels.pipeline(
        device,
        Kernel::BackwardInput,
        plan.vec4,
        &[("USE_RUNNING", use_running), ("HAS_WEIGHT", has_weight)],
    );
    pass.set_pipeline(&pipeline);
    pass.set_bind_group(0, group, &[]);
    pass.dispatch_workgroups(plan.task_grid[0], plan.task_grid[1], 1);
}
