//! What a compiled pipeline is specialised on: the [`Variant`], and the choices a call makes
//! for a kernel ([`Specialize`]) that go into it.

use super::assembly::Assembly;
use super::bindings::MAX_BINDINGS;
use super::plan::Plan;
use super::Kernel;
use crate::activation::Activation;
use crate::profile::Walk;
use crate::tensor::{Binding, DType};

impl Walk {
    /// `WALK` in `shaders/pieces/walk.wgsl`.
    pub(crate) fn constant(self) -> f64 {
        match self {
            Walk::Planes => 0.0,
            Walk::Runs => 1.0,
            Walk::Columns => 2.0,
        }
    }
}

/// What one item a tensor kernel loads holds (`Item` in the item pieces).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum ItemWidth {
    /// One value (`item_scalar.wgsl`).
    Scalar,
    /// Four values of one plane: planes of a multiple of 4 values with 16-byte aligned
    /// bindings (`item_vec4.wgsl`).
    Vec4,
    /// One value of each of four neighbouring channels: planes of one value, C a multiple of 4,
    /// 16-byte aligned bindings (`item_channels.wgsl`). Kernels see (rows, C / 4, 1) items.
    Channels4,
}

impl ItemWidth {
    /// Values per item.
    pub fn lanes(self) -> u64 {
        match self {
            ItemWidth::Scalar => 1,
            ItemWidth::Vec4 | ItemWidth::Channels4 => 4,
        }
    }

    /// Channels per item (`CHANNEL_LANES`).
    pub fn channel_lanes(self) -> u32 {
        match self {
            ItemWidth::Channels4 => 4,
            ItemWidth::Scalar | ItemWidth::Vec4 => 1,
        }
    }
}

/// How a workgroup reduces: subgroup shuffles, or workgroup memory only.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Reduction {
    Subgroup,
    Workgroup,
}

/// What the normalize pass applies after the affine transform (and what the backward's
/// reduction differentiates): the activation, as pipeline constants.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Epilogue {
    pub act: u32,
    /// LeakyReLU's slope, as f32 bits (0 for the others).
    pub slope_bits: u32,
}

impl Epilogue {
    pub const NONE: Epilogue = Epilogue {
        act: 0,
        slope_bits: 0,
    };

    pub fn new(activation: Activation) -> Self {
        let slope = match activation {
            Activation::LeakyRelu(slope) => slope,
            _ => 0.0,
        };
        Epilogue {
            act: activation.code(),
            slope_bits: slope.to_bits(),
        }
    }
}

/// The pipeline constants a call chooses for a kernel: which statistics, which epilogue
/// (ignored by kernels that declare neither).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Specialize {
    pub statistics: Statistics,
    pub epilogue: Epilogue,
    /// Conversions only: to f16 (`TO_F16`).
    pub to_f16: bool,
    /// Kernels assembled as [`Assembly::ChannelTensor`] only: what a plan fixes for the
    /// tensor kernels.
    pub channel_tensor: Option<ChannelTensor>,
}

/// How a [`Assembly::ChannelTensor`] kernel is specialised: the tensors' element type, the
/// workgroup size, whether an invocation owns a whole channel (`OWN_CHANNEL`), and the item:
/// one value, or (`Channels4`, planes of one value and C a multiple of 4) one value of each of four
/// neighbouring channels.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct ChannelTensor {
    pub dtype: DType,
    pub workgroup_size: u32,
    pub own_channel: bool,
    pub item: ItemWidth,
}

impl ChannelTensor {
    /// Channels per item (`CHANNEL_LANES`).
    pub fn lanes(&self) -> u32 {
        self.item.channel_lanes()
    }

    /// Workgroups for `channels` channels: one per item channel, or one invocation each.
    pub fn workgroups(&self, channels: u32) -> u32 {
        let groups = channels / self.lanes();
        if self.own_channel {
            groups.div_ceil(self.workgroup_size)
        } else {
            groups
        }
    }
}

impl From<Statistics> for Specialize {
    fn from(statistics: Statistics) -> Self {
        Specialize {
            statistics,
            epilogue: Epilogue::NONE,
            to_f16: false,
            channel_tensor: None,
        }
    }
}

/// Which statistics a kernel normalizes with (`USE_RUNNING`, for kernels that declare it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Statistics {
    /// save_mean / save_invstd of this batch.
    Batch,
    /// running_mean / running_var (eval mode), invstd = 1 / sqrt(running_var + eps).
    Running,
}

/// One compiled pipeline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Variant {
    pub kernel: Kernel,
    /// Tensor kernels only.
    pub walk: Option<Walk>,
    pub item: ItemWidth,
    /// Kernels that reduce only.
    pub reduction: Option<Reduction>,
    pub dtype: DType,
    pub epilogue: Epilogue,
    pub workgroup_size: u32,
    pub statistics: Statistics,
    /// Conversions only: to f16.
    pub to_f16: bool,
    /// Channel-tensor kernels only: `OWN_CHANNEL`.
    pub own_channel: bool,
    /// Which of the kernel's bindings are bound (absent optional ones are not), by position
    /// in its bindings struct; derived from the struct, never written by hand.
    pub present: u16,
}

impl Variant {
    /// The variant of `kernel` for `plan` (tensor kernels) with these bindings bound, on a
    /// device that reduces with `reduction`. Every field a kernel does not use keeps one value,
    /// so that a kernel's variants differ only in what it uses.
    pub fn new(
        kernel: Kernel,
        plan: Option<&Plan>,
        special: Specialize,
        bound: &[Option<Binding>; MAX_BINDINGS],
        reduction: Reduction,
    ) -> Variant {
        let spec = kernel.spec();
        let reduces = matches!(
            spec.assembly,
            Assembly::TensorReduce | Assembly::PerChannel | Assembly::ChannelTensor
        );
        let channel_tensor = special
            .channel_tensor
            .filter(|_| spec.assembly == Assembly::ChannelTensor);
        let present = bound
            .iter()
            .take(spec.bindings.len())
            .enumerate()
            .fold(0u16, |m, (i, b)| m | (u16::from(b.is_some()) << i));
        Variant {
            kernel,
            walk: plan.map(|p| p.geometry.walk),
            item: plan.map_or(channel_tensor.map_or(ItemWidth::Scalar, |t| t.item), |p| {
                p.item
            }),
            reduction: reduces.then_some(reduction),
            dtype: plan.map_or(channel_tensor.map_or(DType::F32, |t| t.dtype), |p| p.dtype),
            epilogue: if spec.has_epilogue {
                special.epilogue
            } else {
                Epilogue::NONE
            },
            workgroup_size: plan.map_or(
                channel_tensor.map_or(spec.workgroup_size, |t| t.workgroup_size),
                |p| p.geometry.wg as u32,
            ),
            statistics: if spec.has_statistics {
                special.statistics
            } else {
                Statistics::Batch
            },
            to_f16: spec.has_direction && special.to_f16,
            own_channel: channel_tensor.is_some_and(|t| t.own_channel),
            present,
        }
    }

    /// The pipeline cache's key: every field packed into 128 bits (kernel 6, walk 2, item 2,
    /// reduction 2, dtype 1, statistics 1, direction 1, own channel 1, activation 8, slope
    /// 32, workgroup size 16, present 16), so a lookup hashes two words.
    pub fn key(&self) -> u128 {
        let walk = self.walk.map_or(0u128, |w| 1 + w.constant() as u128);
        let item = match self.item {
            ItemWidth::Scalar => 0u128,
            ItemWidth::Vec4 => 1,
            ItemWidth::Channels4 => 2,
        };
        let reduction = match self.reduction {
            None => 0u128,
            Some(Reduction::Subgroup) => 1,
            Some(Reduction::Workgroup) => 2,
        };
        let fields: [(u128, u32); 12] = [
            (self.kernel.index() as u128, 6),
            (walk, 2),
            (item, 2),
            (reduction, 2),
            (u128::from(self.dtype == DType::F16), 1),
            (u128::from(self.statistics == Statistics::Running), 1),
            (u128::from(self.to_f16), 1),
            (u128::from(self.own_channel), 1),
            (u128::from(self.epilogue.act), 8),
            (u128::from(self.epilogue.slope_bits), 32),
            (u128::from(self.workgroup_size), 16),
            (u128::from(self.present), 16),
        ];
        fields.iter().fold(0u128, |key, &(value, bits)| {
            debug_assert!(value < 1 << bits, "a variant field outgrew its key bits");
            (key << bits) | value
        })
    }
}
