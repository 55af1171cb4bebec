//! Element types and memory orders: what a tensor's bytes mean, apart from any device (errors
//! name them, so they sit below everything).

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    #[default]
    F32,
    /// IEEE binary16 (`half::f16`): activations in PyTorch's mixed mode. Statistics,
    /// parameters and running buffers stay f32.
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
}

/// The memory order of a tensor's elements, like PyTorch's `torch.memory_format`. The shape is
/// always the logical (N, C, *spatial).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MemoryFormat {
    /// Row-major (N, C, *spatial): `torch.contiguous_format`.
    #[default]
    Contiguous,
    /// The channel axis last: (N, H, W, C) for 2d, (N, D, H, W, C) for 3d, (N, L, C) for 1d
    /// on (N, C, L): `torch.channels_last` / `torch.channels_last_3d`. For (N, C), or any
    /// shape whose spatial size is 1, both orders are the same and the tensor reports
    /// `Contiguous`.
    ChannelsLast,
}
