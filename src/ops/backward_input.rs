//! Host side of `shaders/backward_input.wgsl`: grad_input in one fused elementwise pass, pass 3
//! of the backward. CPU oracle: [`crate::reference::backward_input`].

use super::{bindings, Assembly, Kernel, KernelSpec, PreparedPlan, Recorder, Statistics};

bindings! {
    /// The bindings of `backward_input.wgsl`.
    BackwardInputBindings, per_block geo {
        /// Channels and eps (`ChannelParams`; eps is read with running statistics).
        chan: Uniform Whole "Channels",
        /// The forward's input (not read with running statistics).
        x: Read Window "array<Item>",
        /// The gradient of the output.
        dy: Read Window "array<Item>",
        /// The gradient of the input (written).
        dx: ReadWrite Window "array<Item>",
        /// save_mean, or running_mean with running statistics.
        mean: Read Whole "array<f32>",
        /// save_invstd, or running_var with running statistics.
        spread: Read Whole "array<f32>",
        /// The forward's weight; absent: 1.
        weight: Read Optional "array<f32>",
        /// Coefficients from `backward_finalize`; absent with running statistics.
        coef: Read Optional "array<vec2<f32>>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "backward_input",
    source: include_str!("../../shaders/backward_input.wgsl"),
    bindings: BackwardInputBindings::SPEC,
    assembly: Assembly::TensorMap,
    has_statistics: true,
    workgroup_size: 0,
};

impl BackwardInputBindings {
    /// Records one dispatch per block of `prepared`.
    pub fn encode(
        &self,
        rec: &mut Recorder<'_, '_>,
        prepared: &PreparedPlan,
        statistics: Statistics,
    ) {
        rec.dispatch_blocks(Kernel::BackwardInput, prepared, statistics, |at| {
            self.resolve(at)
        });
    }
}
