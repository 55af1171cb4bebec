//! Host side of `shaders/update_running.wgsl`: the running-statistics update, a separate small
//! dispatch after the statistics.

use super::{Kernel, KernelSpec, Kernels, Slot};

/// Bindings: params, save_mean, m2, running_mean, running_var, num_batches_tracked.
pub(crate) const UPDATE_RUNNING: KernelSpec = KernelSpec {
    name: "update_running",
    source: include_str!("../../shaders/update_running.wgsl"),
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Read,
        Slot::ReadWrite,
        Slot::ReadWrite,
        Slot::ReadWrite,
    ],
    reduces: false,
    workgroup_size: 256,
};

/// Records the update: always exactly one workgroup (see the shader).
pub(crate) fn encode(
    kernels: &Kernels,
    device: &wgpu::Device,
    pass: &mut wgpu::ComputePass<'_>,
    group: &wgpu::BindGroup,
) {
    let pipeline = kernels.pipeline(device, Kernel::UpdateRunning, None, &[]);
    pass.set_pipeline(&pipeline);
    pass.set_bind_group(0, group, &[]);
    pass.dispatch_workgroups(1, 1, 1);
}
