//! Host side of `shaders/backward_finalize.wgsl`: each channel's partial sums merged in a fixed
//! order into grad_weight, grad_bias and the coefficients of grad_input, pass 2 of the
//! backward. CPU oracle: [`crate::reference::backward_finalize`].

use super::{bindings, Assembly, Kernel, KernelSpec, Recorder, Statistics};

bindings! {
    /// The bindings of `backward_finalize.wgsl`.
    BackwardFinalizeBindings {
        /// Channels, totals and eps (`ChannelParams`).
        chan: Uniform Whole "Channels",
        /// C * total_tasks partial sums from `backward_reduce`.
        partials: Read Whole "array<vec4<f32>>",
        /// save_invstd, or running_var with running statistics.
        spread: Read Whole "array<f32>",
        /// sum(dy * xhat) per channel (written); absent: not wanted.
        grad_weight: ReadWrite Optional "array<f32>",
        /// sum(dy) per channel (written); absent: not wanted.
        grad_bias: ReadWrite Optional "array<f32>",
        /// (sum(dy) / n, sum(dy * xhat) / n) per channel for `backward_input` (written).
        coef: ReadWrite Whole "array<vec2<f32>>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "backward_finalize",
    source: include_str!("../../shaders/backward_finalize.wgsl"),
    bindings: BackwardFinalizeBindings::SPEC,
    assembly: Assembly::PerChannel,
    has_statistics: true,
    workgroup_size: 64,
};

impl BackwardFinalizeBindings {
    /// Records one workgroup per channel (`channel_grid` from the plan).
    pub fn encode(
        &self,
        rec: &mut Recorder<'_, '_>,
        channel_grid: [u32; 2],
        statistics: Statistics,
    ) {
        rec.dispatch(
            Kernel::BackwardFinalize,
            statistics,
            &self.resolve(None),
            channel_grid,
        );
    }
}
