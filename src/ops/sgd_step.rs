//! Host side of `shaders/sgd_step.wgsl`: one `torch.optim.SGD` step on a per-channel
//! parameter. CPU oracle: [`crate::reference::sgd_step`].

use super::{bindings, Assembly, KernelSpec, Recorder, Statistics};

bindings! {
    /// The bindings of `sgd_step.wgsl`.
    SgdStepBindings for SgdStep {
        /// Hyperparameters and the channel count (`SgdParams`).
        step: Uniform Whole "Sgd",
        /// The parameter, updated in place.
        param: ReadWrite Whole "array<f32>",
        /// Its gradient.
        grad: Read Whole "array<f32>",
        /// The momentum buffer (C values, then the started flag), updated in place; absent:
        /// no momentum.
        buf: ReadWrite Optional "array<f32>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec::new(
    "sgd_step",
    include_str!("../../shaders/sgd_step.wgsl"),
    SgdStepBindings::SPEC,
    Assembly::Single,
    256,
);

/// `Sgd` in `sgd_step.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct SgdParams {
    pub channels: u32,
    pub _unused: u32,
    pub nesterov: u32,
    pub _pad: u32,
    pub lr: f32,
    pub momentum: f32,
    pub dampening: f32,
    pub weight_decay: f32,
}

impl SgdStepBindings {
    /// Records the step: one workgroup (see the shader).
    pub fn encode(&self, rec: &mut Recorder<'_, '_>) {
        rec.dispatch(self, Statistics::Batch, [1, 1]);
    }
}
