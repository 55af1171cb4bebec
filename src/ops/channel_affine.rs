//! Host side of `shaders/channel_affine.wgsl`: each channel's normalize coefficients (scale =
//! invstd * weight, shift = bias), for the backward through an activation and for the eval
//! fold. CPU oracle: [`crate::reference::channel_affine`].

use super::{bindings, Assembly, Kernel, KernelSpec, Recorder, Statistics};

bindings! {
    /// The bindings of `channel_affine.wgsl`.
    ChannelAffineBindings {
        /// Channels and eps (`ChannelParams`; eps is read with running statistics).
        chan: Uniform Whole "Channels",
        /// save_mean, or running_mean with running statistics.
        mean: Read Whole "array<f32>",
        /// save_invstd, or running_var with running statistics.
        spread: Read Whole "array<f32>",
        /// Per-channel scale; absent: 1.
        weight: Read Optional "array<f32>",
        /// Per-channel shift; absent: 0.
        bias: Read Optional "array<f32>",
        /// (scale, shift) per channel (written); absent: not wanted.
        affine: ReadWrite Optional "array<vec2<f32>>",
        /// scale per channel (written); absent: not wanted.
        fold_scale: ReadWrite Optional "array<f32>",
        /// bias - mean * scale per channel (written); absent: not wanted.
        fold_shift: ReadWrite Optional "array<f32>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec {
    prelude: "",
    name: "channel_affine",
    source: include_str!("../../shaders/channel_affine.wgsl"),
    bindings: ChannelAffineBindings::SPEC,
    assembly: Assembly::Single,
    has_statistics: true,
    has_epilogue: false,
    has_direction: false,
    workgroup_size: 256,
};

impl ChannelAffineBindings {
    /// Records the map: one workgroup (see the shader).
    pub fn encode(&self, rec: &mut Recorder<'_, '_>, statistics: Statistics) {
        rec.dispatch(
            Kernel::ChannelAffine,
            statistics,
            &self.resolve(None),
            [1, 1],
        );
    }
}
