//! Host side of `shaders/forward_single.wgsl`: the training forward in one dispatch (batch
//! statistics, save_mean / save_invstd / M2, and the normalized output with its epilogue) for
//! shapes whose channels fit one workgroup or one invocation. CPU oracles:
//! [`crate::reference::welford_partials`] and [`crate::reference::normalize`]; the planner that
//! picks it is [`single_pass`].

use super::{
    bindings, Assembly, ChannelTensor, Epilogue, Kernel, KernelSpec, Recorder, Specialize,
    Statistics,
};
use crate::tensor::DType;

bindings! {
    /// The bindings of `forward_single.wgsl`.
    ForwardSingleBindings {
        /// The (rows, C, S) geometry, count and eps (`SingleParams`).
        shape: Uniform Whole "Single",
        /// The input, bound whole.
        x: Read Whole "array<Item>",
        /// The output, same shape (written).
        y: ReadWrite Whole "array<Item>",
        /// Per-channel scale; absent: 1 (affine = false).
        weight: Read Optional "array<f32>",
        /// Per-channel shift; absent: 0.
        bias: Read Optional "array<f32>",
        /// Added before the activation; absent: nothing added.
        residual: Read Optional "array<Item>",
        /// Batch mean per channel (written).
        save_mean: ReadWrite Whole "array<f32>",
        /// 1 / sqrt(biased variance + eps) per channel (written).
        save_invstd: ReadWrite Whole "array<f32>",
        /// M2 per channel, for the running-statistics update (written).
        m2: ReadWrite Whole "array<f32>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec {
    prelude: "",
    name: "forward_single",
    source: include_str!("../../shaders/forward_single.wgsl"),
    bindings: ForwardSingleBindings::SPEC,
    assembly: Assembly::ChannelTensor,
    has_statistics: false,
    has_epilogue: true,
    has_direction: false,
    workgroup_size: 256,
};

/// `Single` in `shaders/forward_single.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct SingleParams {
    pub channels: u32,
    pub rows: u32,
    pub s_count: u32,
    pub row_stride: u32,
    pub plane: u32,
    pub count: u32,
    pub eps: f32,
    pub _pad: u32,
}

/// When the planner takes one invocation per channel: many channels, and rows few enough for
/// one invocation to walk twice. Measured on lavapipe (`examples/bench --forward-path`, see
/// BENCHMARKS.md): (256, 1024) runs at 3.1 copies against the multi-pass 5.5, channels-last
/// 4x2048x7x7 (196 rows) at 2.9 against 5.5, but channels-last 64x256x14x14 (12544 rows) at
/// 7.3 against 4.1.
const OWN_MIN_CHANNELS: u32 = 128;
const OWN_MAX_ROWS: u32 = 1024;

/// How a training forward runs; `ContextOptions::force_forward` pins it (tests cover each).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ForwardPath {
    /// Statistics, merge, normalize and the running update as four dispatches, through the
    /// tensor walks (any shape, tensors beyond one binding included).
    MultiPass,
    /// One dispatch with a workgroup per channel (plus the running update); only when forced
    /// (see [`single_pass`]).
    WorkgroupPerChannel,
    /// One dispatch with an invocation per channel, down its column (plus the running
    /// update); only for tensors with one value per row and channel ((N, C), channels-last).
    InvocationPerChannel,
}

impl ForwardPath {
    /// Every path, for tests that cover them all.
    pub const ALL: [ForwardPath; 3] = [
        ForwardPath::MultiPass,
        ForwardPath::WorkgroupPerChannel,
        ForwardPath::InvocationPerChannel,
    ];
}

/// How the single dispatch covers a (rows, C, S) tensor, or None where the multi-pass path is
/// the better (or the only) choice; `forced` pins the path where it can serve the shape.
pub(crate) fn single_pass(
    (rows, c, s): (u32, u32, u32),
    dtype: DType,
    forced: Option<ForwardPath>,
) -> Option<ChannelTensor> {
    let count = rows.checked_mul(s)?;
    if count == 0 || c == 0 {
        return None;
    }
    let own_ok = s == 1;
    let path = match forced {
        Some(ForwardPath::InvocationPerChannel) if !own_ok => ForwardPath::WorkgroupPerChannel,
        Some(path) => path,
        None if own_ok && c >= OWN_MIN_CHANNELS && rows <= OWN_MAX_ROWS => {
            ForwardPath::InvocationPerChannel
        }
        // One workgroup per channel is never the default: on lavapipe it measured slower than
        // the multi-pass walks on every shape (4x2048x7x7 8.2 copies against 7.2, 64x256x14x14
        // 4.3 against 2.0), its per-value division and scalar loads costing more than the
        // dispatches it saves on a compute-bound adapter. Whether it wins on a GPU, where
        // dispatches cost more, is not measured yet.
        None => ForwardPath::MultiPass,
    };
    let own_channel = match path {
        ForwardPath::MultiPass => return None,
        ForwardPath::WorkgroupPerChannel => false,
        ForwardPath::InvocationPerChannel => true,
    };
    Some(ChannelTensor {
        dtype,
        // Short channels: a small workgroup, so that fewer invocations sit idle and the
        // reduction is shorter.
        workgroup_size: if own_channel || count <= 2048 {
            64
        } else {
            256
        },
        own_channel,
    })
}

impl ForwardSingleBindings {
    /// Records the dispatch for `channels` channels, per `how`.
    pub fn encode(
        &self,
        rec: &mut Recorder<'_, '_>,
        how: ChannelTensor,
        epilogue: Epilogue,
        channels: u32,
        max_grid: u32,
    ) {
        let workgroups = if how.own_channel {
            channels.div_ceil(how.workgroup_size)
        } else {
            channels
        };
        let special = Specialize {
            statistics: Statistics::Batch,
            epilogue,
            to_f16: false,
            channel_tensor: Some(how),
        };
        rec.dispatch(
            Kernel::ForwardSingle,
            special,
            &self.resolve(None),
            super::plan::grid(u64::from(workgroups), max_grid),
        );
    }
}
