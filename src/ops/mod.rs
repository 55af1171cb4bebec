//! The op layer: one module per kernel, each beside its shader in `shaders/`, and the
//! machinery they share.
//!
//! | kernel | host module | shader |
//! |---|---|---|
//! | statistics (Welford partials) | [`stats`] | `stats.wgsl` |
//! | statistics merge per channel | [`finalize_stats`] | `finalize_stats.wgsl` |
//! | normalize (fused scale and shift) | [`normalize`] | `normalize.wgsl` |
//! | running-statistics update | [`update_running`] | `update_running.wgsl` |
//! | backward sums | [`backward_reduce`] | `backward_reduce.wgsl` |
//! | backward per channel | [`backward_finalize`] | `backward_finalize.wgsl` |
//! | grad_input | [`backward_input`] | `backward_input.wgsl` |
//! | per-channel coefficients (backward epilogue, eval fold) | [`channel_affine`] | `channel_affine.wgsl` |
//! | f16 <-> f32 copies of f16 activations | [`convert`] | `convert.wgsl` + `convert_packed.wgsl` / `convert_native.wgsl` |
//! | an SGD step on a per-channel parameter | [`sgd_step`] | `sgd_step.wgsl` |
//!
//! Each module declares its bindings once, with [`bindings!`]: a struct with one named field
//! per binding. That declaration is the only place a binding's number lives: it gives the
//! bind-group layout, the bind group, and the `@group(0) @binding(i) var ...` lines prepended
//! to the shader (the `.wgsl` files use the names and declare no bindings). Optional bindings
//! are `Option`s; an absent one is specialised away by a generated `HAS_<NAME>` override
//! constant and bound to a small unused buffer.
//!
//! A compiled pipeline is one [`Variant`]: kernel x walk x item width x reduction path x dtype
//! x layout x epilogue x statistics x which optional bindings are present. Pipelines and
//! bind-group layouts are built once per device ([`Pipelines`]); bind groups are cached per
//! exact buffer ranges ([`BindCache`]). Shaders are assembled from pieces (see
//! [`Assembly`]): `common.wgsl`; for tensor kernels an item piece and `walk.wgsl`; for kernels
//! that reduce a reduction piece (and, for tensor kernels, `walk_reduce.wgsl`).

pub(crate) mod backward_finalize;
pub(crate) mod backward_input;
pub(crate) mod backward_reduce;
pub(crate) mod backward_single;
pub(crate) mod channel_affine;
pub(crate) mod convert;
pub(crate) mod finalize_stats;
pub(crate) mod forward_single;
pub(crate) mod normalize;
pub(crate) mod plan;
pub(crate) mod sgd_step;
pub(crate) mod stats;
#[cfg(any(test, feature = "bench"))]
pub(crate) mod stream;
pub(crate) mod update_running;

use std::collections::HashMap;
use std::sync::Mutex;

use crate::tensor::DType;

pub use crate::activation::Activation;
pub use crate::profile::Walk;
pub(crate) use crate::profile::{KernelLimits, Target};
pub(crate) use crate::tensor::Binding;
pub(crate) use plan::Plan;

const COMMON: &str = include_str!("../../shaders/pieces/common.wgsl");
const ITEM_VEC4: &str = include_str!("../../shaders/pieces/item_vec4.wgsl");
const ITEM_SCALAR: &str = include_str!("../../shaders/pieces/item_scalar.wgsl");
const ITEM_CHANNELS: &str = include_str!("../../shaders/pieces/item_channels.wgsl");
const WALK: &str = include_str!("../../shaders/pieces/walk.wgsl");
const WALK_REDUCE: &str = include_str!("../../shaders/pieces/walk_reduce.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("../../shaders/pieces/reduce_subgroup.wgsl");
const REDUCE_WORKGROUP: &str = include_str!("../../shaders/pieces/reduce_workgroup.wgsl");
const EPILOGUE: &str = include_str!("../../shaders/pieces/epilogue.wgsl");

/// The most bindings any kernel has.
pub(crate) const MAX_BINDINGS: usize = 12;

// ---- variants -------------------------------------------------------------------------------

/// The kernels.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Kernel {
    Stats,
    FinalizeStats,
    Normalize,
    UpdateRunning,
    BackwardReduce,
    BackwardFinalize,
    BackwardInput,
    ChannelAffine,
    Convert,
    ConvertNative,
    SgdStep,
    ForwardSingle,
    /// The single-dispatch training forward with the running update (10 storage buffers:
    /// built only on devices that allow them).
    ForwardSingleUpdate,
    BackwardSingle,
    /// The single-dispatch backward through the epilogue (11 storage buffers: built only on
    /// devices that allow them).
    BackwardSingleEpilogue,
    /// The benchmark's second floor, compiled only where it is used.
    #[cfg(any(test, feature = "bench"))]
    Stream,
}

impl Kernel {
    /// Every kernel, in declaration order (layouts are indexed by it).
    const ALL: &'static [Kernel] = &[
        Kernel::Stats,
        Kernel::FinalizeStats,
        Kernel::Normalize,
        Kernel::UpdateRunning,
        Kernel::BackwardReduce,
        Kernel::BackwardFinalize,
        Kernel::BackwardInput,
        Kernel::ChannelAffine,
        Kernel::Convert,
        Kernel::ConvertNative,
        Kernel::SgdStep,
        Kernel::ForwardSingle,
        Kernel::ForwardSingleUpdate,
        Kernel::BackwardSingle,
        Kernel::BackwardSingleEpilogue,
        #[cfg(any(test, feature = "bench"))]
        Kernel::Stream,
    ];

    fn spec(self) -> &'static KernelSpec {
        match self {
            Kernel::Stats => &stats::SPEC,
            Kernel::FinalizeStats => &finalize_stats::SPEC,
            Kernel::Normalize => &normalize::SPEC,
            Kernel::UpdateRunning => &update_running::SPEC,
            Kernel::BackwardReduce => &backward_reduce::SPEC,
            Kernel::BackwardFinalize => &backward_finalize::SPEC,
            Kernel::BackwardInput => &backward_input::SPEC,
            Kernel::ChannelAffine => &channel_affine::SPEC,
            Kernel::Convert => &convert::SPEC,
            Kernel::ConvertNative => &convert::NATIVE_SPEC,
            Kernel::SgdStep => &sgd_step::SPEC,
            Kernel::ForwardSingle => &forward_single::SPEC,
            Kernel::ForwardSingleUpdate => &forward_single::UPDATE_SPEC,
            Kernel::BackwardSingle => &backward_single::SPEC,
            Kernel::BackwardSingleEpilogue => &backward_single::EPILOGUE_SPEC,
            #[cfg(any(test, feature = "bench"))]
            Kernel::Stream => &stream::SPEC,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

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

/// Memory layout of the activations.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Layout {
    /// (N, C, *spatial), row-major.
    Contiguous,
}

/// What the normalize pass applies after the affine transform (and what the backward's
/// reduction differentiates): the activation, as pipeline constants.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Epilogue {
    act: u32,
    /// LeakyReLU's slope, as f32 bits (0 for the others).
    slope_bits: u32,
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
    pub layout: Layout,
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

// ---- bindings -------------------------------------------------------------------------------

/// How a kernel uses one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Uniform,
    Read,
    ReadWrite,
}

/// What a binding field holds and how it is bound per dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RoleKind {
    /// The per-block uniform of a tensor pass, supplied by the plan.
    Blocks,
    /// A buffer range bound as it is.
    Whole,
    /// A buffer range that may be absent.
    Optional,
    /// A tensor bound through each block's window.
    Window,
    /// A tensor bound through each block's window, or absent.
    OptionalWindow,
}

impl RoleKind {
    /// Whether the binding may be absent (and so has a `HAS_<NAME>` override).
    pub fn optional(self) -> bool {
        matches!(self, RoleKind::Optional | RoleKind::OptionalWindow)
    }
}

/// A binding's role: the type of its field in a bindings struct and how it is bound.
pub(crate) trait Role {
    type Field;
    const KIND: RoleKind;
    fn resolve(field: &Self::Field, at: Option<(&PreparedPlan, usize)>) -> Option<Binding>;
}

/// Bound as it is.
pub(crate) struct Whole;
/// Bound as it is, or absent.
pub(crate) struct Optional;
/// A tensor bound through the window of each block.
pub(crate) struct Window;
/// A tensor bound through the window of each block, or absent.
pub(crate) struct OptionalWindow;

impl Role for Whole {
    type Field = Binding;
    const KIND: RoleKind = RoleKind::Whole;
    fn resolve(field: &Binding, _: Option<(&PreparedPlan, usize)>) -> Option<Binding> {
        Some(field.clone())
    }
}

impl Role for Optional {
    type Field = Option<Binding>;
    const KIND: RoleKind = RoleKind::Optional;
    fn resolve(field: &Option<Binding>, _: Option<(&PreparedPlan, usize)>) -> Option<Binding> {
        field.clone()
    }
}

impl Role for Window {
    type Field = Binding;
    const KIND: RoleKind = RoleKind::Window;
    fn resolve(field: &Binding, at: Option<(&PreparedPlan, usize)>) -> Option<Binding> {
        Some(match at {
            Some((p, i)) => field.window(&p.plan, &p.plan.blocks[i]),
            None => field.clone(),
        })
    }
}

impl Role for OptionalWindow {
    type Field = Option<Binding>;
    const KIND: RoleKind = RoleKind::OptionalWindow;
    fn resolve(field: &Option<Binding>, at: Option<(&PreparedPlan, usize)>) -> Option<Binding> {
        field.as_ref().and_then(|f| Window::resolve(f, at))
    }
}

/// One binding of a kernel, as declared by [`bindings!`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct BindingSpec {
    pub name: &'static str,
    pub access: Access,
    /// The WGSL type of the variable.
    pub wgsl: &'static str,
    pub role: RoleKind,
}

/// Declares a kernel's bindings struct: one field per binding, in binding order (the first,
/// `per_block NAME`, is the tensor passes' per-block uniform, which the plan supplies). Each
/// field is `name: Access Role "WGSL type"`. Generates `SPEC` (the order, for the layout and
/// the shader's declarations) and `resolve` (the bound ranges of one dispatch, in that order).
macro_rules! bindings {
    (
        $(#[$meta:meta])*
        $name:ident $(, per_block $geo:ident)? {
            $( $(#[$fmeta:meta])* $field:ident : $access:ident $role:ident $wgsl:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug)]
        pub(crate) struct $name {
            $( $(#[$fmeta])* pub $field: <$crate::ops::$role as $crate::ops::Role>::Field, )*
        }

        impl $name {
            /// The bindings in binding order.
            pub(crate) const SPEC: &'static [$crate::ops::BindingSpec] = &[
                $( $crate::ops::BindingSpec {
                    name: stringify!($geo),
                    access: $crate::ops::Access::Uniform,
                    wgsl: "Block",
                    role: $crate::ops::RoleKind::Blocks,
                }, )?
                $( $crate::ops::BindingSpec {
                    name: stringify!($field),
                    access: $crate::ops::Access::$access,
                    wgsl: $wgsl,
                    role: <$crate::ops::$role as $crate::ops::Role>::KIND,
                }, )*
            ];

            /// The ranges bound for block `at` (None: the per-channel passes), in binding
            /// order; None where an optional binding is absent.
            #[allow(unused_mut, unused_assignments)]
            pub(crate) fn resolve(
                &self,
                at: Option<(&$crate::ops::PreparedPlan, usize)>,
            ) -> [Option<$crate::ops::Binding>; $crate::ops::MAX_BINDINGS] {
                let mut out: [Option<$crate::ops::Binding>; $crate::ops::MAX_BINDINGS] =
                    Default::default();
                let mut i = 0;
                $(
                    let _ = stringify!($geo);
                    out[i] = at.map(|(p, b)| p.params[b].clone());
                    i += 1;
                )?
                $(
                    out[i] = <$crate::ops::$role as $crate::ops::Role>::resolve(&self.$field, at);
                    i += 1;
                )*
                out
            }
        }
    };
}
pub(crate) use bindings;

impl Binding {
    /// The part of this tensor binding that `block` of `plan` binds.
    pub fn window(&self, plan: &Plan, block: &plan::Block) -> Binding {
        let item = plan.item_bytes;
        Binding {
            buffer: self.buffer.clone(),
            offset: self.offset + u64::from(block.params.bind_base) * item,
            // Whole words (an odd number of f16 values reads one more, inside the tensor's
            // word-padded allocation or the next window; it is never written).
            size: (block.bind_items * item).next_multiple_of(4),
        }
    }
}

/// A plan with one immutable params buffer per block, so that several calls recorded into one
/// encoder cannot see each other's parameters.
#[derive(Debug)]
pub(crate) struct PreparedPlan {
    pub plan: Plan,
    pub params: Vec<Binding>,
}

/// Per-channel totals and eps: `Channels` in `shaders/pieces/common.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ChannelParams {
    pub channels: u32,
    pub total_tasks: u32,
    pub count: u32,
    pub eps: f32,
}

// ---- kernels and pipelines ------------------------------------------------------------------

/// How a kernel is assembled and dispatched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Assembly {
    /// Walks the tensor, one dispatch per block, writes elementwise: common, item, walk.
    TensorMap,
    /// Walks the tensor and reduces each task: common, item, walk, reduction, walk_reduce.
    TensorReduce,
    /// One workgroup per channel, reducing: common, reduction.
    PerChannel,
    /// One workgroup: common.
    Single,
    /// Whole tensors bound at once, a workgroup or an invocation per channel, reducing:
    /// common, scalar items, reduction (the single-dispatch passes).
    ChannelTensor,
}

impl Assembly {
    /// Whether its `array<Item>` bindings are tensors of the variant's dtype (with accessors).
    fn binds_tensors(self) -> bool {
        matches!(
            self,
            Assembly::TensorMap | Assembly::TensorReduce | Assembly::ChannelTensor
        )
    }
}

/// A kernel's static description.
pub(crate) struct KernelSpec {
    pub name: &'static str,
    pub source: &'static str,
    pub bindings: &'static [BindingSpec],
    pub assembly: Assembly,
    /// Whether the shader declares `USE_RUNNING`.
    pub has_statistics: bool,
    /// Whether the shader uses `epilogue.wgsl` (`ACT`, `LEAKY_SLOPE`).
    pub has_epilogue: bool,
    /// Whether the shader declares `TO_F16`.
    pub has_direction: bool,
    /// Source placed before everything else (`enable` directives).
    pub prelude: &'static str,
    /// Invocations per workgroup of the non-tensor kernels.
    pub workgroup_size: u32,
}

/// The `HAS_<NAME>` override of an optional binding.
fn presence_constant(name: &str) -> String {
    format!("HAS_{}", name.to_uppercase())
}

/// The WGSL declarations of a kernel's bindings (and the overrides of its optional ones). A
/// tensor binding (`array<Item>`) holds `Stored` values, the variant's element type at the
/// item's width, and gets accessors that widen to and round from the f32 `Item`:
/// `load_<name>(i)` and, where written, `store_<name>(i, v)`; kernels use those, never the
/// array directly.
fn declarations(spec: &KernelSpec, v: &Variant) -> String {
    let mut out = String::new();
    let stored = match (v.dtype, v.item) {
        (DType::F32, ItemWidth::Scalar) => "f32",
        (DType::F32, ItemWidth::Vec4 | ItemWidth::Channels4) => "vec4<f32>",
        (DType::F16, ItemWidth::Scalar) => "f16",
        (DType::F16, ItemWidth::Vec4 | ItemWidth::Channels4) => "vec4<f16>",
    };
    let tensor_kernel = spec.assembly.binds_tensors();
    if tensor_kernel {
        out.push_str(&format!("alias Stored = {stored};\n"));
    }
    for (i, b) in spec.bindings.iter().enumerate() {
        let class = match b.access {
            Access::Uniform => "uniform",
            Access::Read => "storage, read",
            Access::ReadWrite => "storage, read_write",
        };
        let tensor = tensor_kernel && b.wgsl == "array<Item>";
        let ty = if tensor { "array<Stored>" } else { b.wgsl };
        out.push_str(&format!(
            "@group(0) @binding({i}) var<{class}> {}: {ty};\n",
            b.name
        ));
        if tensor {
            out.push_str(&format!(
                "fn load_{0}(i: u32) -> Item {{ return Item({0}[i]); }}\n",
                b.name
            ));
            if b.access == Access::ReadWrite {
                out.push_str(&format!(
                    "fn store_{0}(i: u32, v: Item) {{ {0}[i] = Stored(v); }}\n",
                    b.name
                ));
            }
        }
        if b.role.optional() {
            out.push_str(&format!(
                "override {}: bool = true;\n",
                presence_constant(b.name)
            ));
        }
    }
    out
}

/// Bind-group layouts (built once per device, from each kernel's bindings struct) and compiled
/// pipelines (built on first use, then reused), keyed by [`Variant`].
pub(crate) struct Pipelines {
    reduction: Reduction,
    /// Invocations per run of the walks (`LANES` in walk.wgsl): the profile's run width.
    run_width: u32,
    /// Per kernel (by `Kernel::index`); None where the device allows fewer storage buffers per
    /// stage than the kernel binds.
    layouts: Vec<Option<wgpu::BindGroupLayout>>,
    pipeline_layouts: Vec<Option<wgpu::PipelineLayout>>,
    pipelines: Mutex<HashMap<Variant, wgpu::ComputePipeline>>,
    /// Bound where an optional binding is absent (never accessed: its `HAS_` constant is
    /// false): one range shared by the read-only bindings, and for the read-write ones a
    /// range per binding index (at the device's offset alignment), since WebGPU forbids a
    /// dispatch to use a buffer both ways or two writable bindings over one range.
    unbound_read: Binding,
    unbound_write: wgpu::Buffer,
    unbound_stride: u64,
}

impl std::fmt::Debug for Pipelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipelines")
            .field("reduction", &self.reduction)
            .field("compiled", &self.created())
            .finish()
    }
}

impl Pipelines {
    pub fn new(device: &wgpu::Device, subgroups: bool, run_width: u32) -> Self {
        let mut layouts = Vec::new();
        let mut pipeline_layouts = Vec::new();
        let max_storage = device.limits().max_storage_buffers_per_shader_stage;
        for &kernel in Kernel::ALL {
            let spec = kernel.spec();
            let storage = spec.bindings.iter().filter(|b| b.access != Access::Uniform);
            // A kernel the device cannot bind is not built; `has` tells its callers.
            if storage.count() > max_storage as usize {
                layouts.push(None);
                pipeline_layouts.push(None);
                continue;
            }
            let entries: Vec<wgpu::BindGroupLayoutEntry> = spec
                .bindings
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                    binding: i as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: match b.access {
                            Access::Uniform => wgpu::BufferBindingType::Uniform,
                            Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
                            Access::ReadWrite => {
                                wgpu::BufferBindingType::Storage { read_only: false }
                            }
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                })
                .collect();
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(spec.name),
                entries: &entries,
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(spec.name),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            layouts.push(Some(layout));
            pipeline_layouts.push(Some(pipeline_layout));
        }
        let unbound = |size: u64| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("unbound"),
                size,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let unbound_stride = u64::from(device.limits().min_storage_buffer_offset_alignment).max(16);
        Pipelines {
            reduction: if subgroups {
                Reduction::Subgroup
            } else {
                Reduction::Workgroup
            },
            run_width,
            layouts,
            pipeline_layouts,
            pipelines: Mutex::new(HashMap::new()),
            unbound_read: Binding::whole(&unbound(16)),
            unbound_write: unbound(unbound_stride * MAX_BINDINGS as u64),
            unbound_stride,
        }
    }

    /// What an absent optional binding at `index` binds.
    fn unbound(&self, index: usize, writes: bool) -> Binding {
        if writes {
            Binding {
                buffer: self.unbound_write.clone(),
                offset: index as u64 * self.unbound_stride,
                size: 16,
            }
        } else {
            self.unbound_read.clone()
        }
    }

    /// How many pipelines have been compiled.
    pub fn created(&self) -> usize {
        self.pipelines.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// The variant of `kernel` for `plan` (tensor kernels) with these bindings bound.
    fn variant(
        &self,
        kernel: Kernel,
        plan: Option<&Plan>,
        special: Specialize,
        bound: &[Option<Binding>; MAX_BINDINGS],
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
            reduction: reduces.then_some(self.reduction),
            dtype: plan.map_or(channel_tensor.map_or(DType::F32, |t| t.dtype), |p| p.dtype),
            layout: Layout::Contiguous,
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

    /// The full WGSL source of a variant.
    fn source(&self, v: &Variant) -> String {
        let spec = v.kernel.spec();
        let reduce = match v.reduction {
            Some(Reduction::Subgroup) => REDUCE_SUBGROUP,
            _ => REDUCE_WORKGROUP,
        };
        let item = match v.item {
            ItemWidth::Vec4 => ITEM_VEC4,
            ItemWidth::Channels4 => ITEM_CHANNELS,
            ItemWidth::Scalar => ITEM_SCALAR,
        };
        let pieces: &[&str] = match spec.assembly {
            Assembly::TensorMap => &[COMMON, item, WALK],
            Assembly::TensorReduce => &[COMMON, item, WALK, reduce, WALK_REDUCE],
            Assembly::PerChannel => &[COMMON, reduce],
            Assembly::Single => &[COMMON],
            Assembly::ChannelTensor => &[COMMON, item, reduce],
        };
        let mut src = String::with_capacity(16 * 1024);
        src.push_str(spec.prelude);
        if v.dtype == DType::F16 {
            src.push_str("enable f16;\n");
        }
        src.push_str(&declarations(spec, v));
        for piece in pieces {
            src.push_str(piece);
        }
        if spec.has_epilogue {
            src.push_str(EPILOGUE);
        }
        src.push_str(spec.source);
        src
    }

    /// Whether the device can run `kernel` (its storage buffers within the device's limit).
    pub fn has(&self, kernel: Kernel) -> bool {
        self.layouts[kernel.index()].is_some()
    }

    /// The pipeline of a variant, compiled on first use; None where the device cannot run it.
    fn pipeline(&self, device: &wgpu::Device, v: &Variant) -> Option<wgpu::ComputePipeline> {
        let layout = self.pipeline_layouts[v.kernel.index()].as_ref()?;
        let mut cache = match self.pipelines.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(p) = cache.get(v) {
            return Some(p.clone());
        }
        let spec = v.kernel.spec();
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(spec.name),
            source: wgpu::ShaderSource::Wgsl(self.source(v).into()),
        });
        let mut constants: Vec<(String, f64)> = vec![("WG".into(), f64::from(v.workgroup_size))];
        if let Some(walk) = v.walk {
            constants.push(("WALK".into(), walk.constant()));
            constants.push(("LANES".into(), f64::from(self.run_width)));
        }
        if spec.has_statistics {
            let running = v.statistics == Statistics::Running;
            constants.push(("USE_RUNNING".into(), f64::from(u8::from(running))));
        }
        if spec.has_direction {
            constants.push(("TO_F16".into(), f64::from(u8::from(v.to_f16))));
        }
        if spec.assembly == Assembly::ChannelTensor {
            constants.push(("OWN_CHANNEL".into(), f64::from(u8::from(v.own_channel))));
        }
        if spec.has_epilogue {
            constants.push(("ACT".into(), f64::from(v.epilogue.act)));
            let slope = f32::from_bits(v.epilogue.slope_bits);
            constants.push(("LEAKY_SLOPE".into(), f64::from(slope)));
        }
        for (i, b) in spec.bindings.iter().enumerate() {
            if b.role.optional() {
                let present = v.present & (1 << i) != 0;
                constants.push((presence_constant(b.name), f64::from(u8::from(present))));
            }
        }
        let constants: Vec<(&str, f64)> = constants.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(spec.name),
            layout: Some(layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                // Every kernel writes its workgroup memory before reading it.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        cache.insert(*v, pipeline.clone());
        Some(pipeline)
    }
}

/// Keeps at most this many bind groups per cache; a full cache starts over.
const MAX_CACHED_BIND_GROUPS: usize = 256;

/// Bind groups keyed by kernel and exact buffer ranges, so a repeated call with the same
/// tensors creates none. The key is a fixed-size array: a lookup allocates nothing.
#[derive(Default)]
pub(crate) struct BindCache {
    groups: HashMap<(Kernel, [Option<Binding>; MAX_BINDINGS]), wgpu::BindGroup>,
}

impl BindCache {
    fn get(
        &mut self,
        pipelines: &Pipelines,
        device: &wgpu::Device,
        kernel: Kernel,
        bound: &[Option<Binding>; MAX_BINDINGS],
    ) -> Option<wgpu::BindGroup> {
        let layout = pipelines.layouts[kernel.index()].as_ref()?;
        let spec = kernel.spec();
        let mut key: [Option<Binding>; MAX_BINDINGS] = Default::default();
        for (i, slot) in key.iter_mut().enumerate().take(spec.bindings.len()) {
            let writes = spec.bindings[i].access == Access::ReadWrite;
            *slot = Some(
                bound[i]
                    .clone()
                    .unwrap_or_else(|| pipelines.unbound(i, writes)),
            );
        }
        let key = (kernel, key);
        if let Some(group) = self.groups.get(&key) {
            return Some(group.clone());
        }
        if self.groups.len() >= MAX_CACHED_BIND_GROUPS {
            self.groups.clear();
        }
        let entries: Vec<wgpu::BindGroupEntry<'_>> = key
            .1
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &b.buffer,
                    offset: b.offset,
                    size: wgpu::BufferSize::new(b.size),
                }),
            })
            .collect();
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(spec.name),
            layout,
            entries: &entries,
        });
        self.groups.insert(key, group.clone());
        Some(group)
    }

    /// Forgets every group (e.g. when a scratch buffer they bind was replaced).
    pub fn clear(&mut self) {
        self.groups.clear();
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }
}

// ---- recording ------------------------------------------------------------------------------

/// What an op's `encode` records with: the device's pipelines, a bind-group cache, and an open
/// compute pass.
pub(crate) struct Recorder<'a, 'p> {
    pub device: &'a wgpu::Device,
    pub pipelines: &'a Pipelines,
    pub binds: &'a mut BindCache,
    pub pass: &'a mut wgpu::ComputePass<'p>,
    /// Dispatches and workgroups recorded so far by the workspace (tests compare them with
    /// the planner's description of a call).
    pub tally: &'a mut DispatchTally,
}

/// What a workspace has recorded: dispatches and their workgroups (two adds per dispatch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchTally {
    /// Dispatches recorded.
    pub dispatches: u64,
    /// Workgroups they launch.
    pub workgroups: u64,
}

impl Recorder<'_, '_> {
    /// One dispatch per block of `prepared`, each with the bindings `resolve` gives for it.
    pub fn dispatch_blocks(
        &mut self,
        kernel: Kernel,
        prepared: &PreparedPlan,
        special: impl Into<Specialize>,
        resolve: impl Fn(Option<(&PreparedPlan, usize)>) -> [Option<Binding>; MAX_BINDINGS],
    ) {
        let special = special.into();
        let plan = &prepared.plan;
        for (i, block) in plan.blocks.iter().enumerate() {
            let bound = resolve(Some((prepared, i)));
            if i == 0 {
                let v = self.pipelines.variant(kernel, Some(plan), special, &bound);
                let Some(pipeline) = self.pipelines.pipeline(self.device, &v) else {
                    return unavailable(kernel);
                };
                self.pass.set_pipeline(&pipeline);
            }
            let Some(group) = self.binds.get(self.pipelines, self.device, kernel, &bound) else {
                return unavailable(kernel);
            };
            self.pass.set_bind_group(0, &group, &[]);
            self.pass
                .dispatch_workgroups(block.grid[0], block.grid[1], 1);
            self.tally.add(block.grid);
        }
    }

    /// One dispatch of `grid` workgroups with `bound`.
    pub fn dispatch(
        &mut self,
        kernel: Kernel,
        special: impl Into<Specialize>,
        bound: &[Option<Binding>; MAX_BINDINGS],
        grid: [u32; 2],
    ) {
        let v = self.pipelines.variant(kernel, None, special.into(), bound);
        let (Some(pipeline), Some(group)) = (
            self.pipelines.pipeline(self.device, &v),
            self.binds.get(self.pipelines, self.device, kernel, bound),
        ) else {
            return unavailable(kernel);
        };
        self.pass.set_pipeline(&pipeline);
        self.pass.set_bind_group(0, &group, &[]);
        self.pass.dispatch_workgroups(grid[0], grid[1], 1);
        self.tally.add(grid);
    }
}

impl DispatchTally {
    fn add(&mut self, grid: [u32; 2]) {
        self.dispatches += 1;
        self.workgroups += u64::from(grid[0]) * u64::from(grid[1]);
    }
}

/// A dispatch of a kernel the device cannot run: a planner bug (every caller of such a kernel
/// checks `Pipelines::has` first), caught by debug builds' tests; release builds record nothing
/// rather than a dispatch the device would reject.
fn unavailable(kernel: Kernel) {
    debug_assert!(
        false,
        "{} is not available on this device",
        kernel.spec().name
    );
}

/// Shared by the ops' tests: contexts per walk, recording one op alone, reading buffers back.
#[cfg(test)]
pub(crate) mod testing {
    use super::{ItemWidth, Plan, PreparedPlan, Recorder, Walk};
    use crate::workspace::{Geometry, Workspace};
    use crate::{Context, ContextOptions, Tensor};

    /// The item widths the channel-tensor kernels can read a (rows, C, S) tensor in: vec4
    /// across channels where planes hold one value and C is a multiple of 4.
    pub fn channel_items(c: usize, s: usize) -> Vec<ItemWidth> {
        let mut items = vec![ItemWidth::Scalar];
        if s == 1 && c.is_multiple_of(4) {
            items.push(ItemWidth::Channels4);
        }
        items
    }

    /// A context whose tensor kernels use `walk` where it can serve.
    pub fn context(walk: Option<Walk>) -> Context {
        Context::with_options(ContextOptions {
            force_walk: walk,
            ..ContextOptions::from_env()
        })
        .expect("a GPU adapter (on Linux without a GPU: apt-get install mesa-vulkan-drivers)")
    }

    /// Records what `f` records, alone, submits it and waits.
    pub fn run(ctx: &Context, ws: &mut Workspace, f: impl FnOnce(&mut Recorder<'_, '_>)) {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        ws.record(&mut encoder, "op test", f);
        ctx.queue().submit(Some(encoder.finish()));
        ctx.wait().expect("the op ran");
    }

    /// `len` f32 values of `buffer`.
    pub fn read(ctx: &Context, buffer: &wgpu::Buffer, len: usize) -> Vec<f32> {
        crate::context::block_on(crate::transfer::read_f32(ctx, buffer, 0, len)).expect("readback")
    }

    /// Deterministic values in [lo, hi).
    pub fn values(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                lo + (hi - lo) * ((state >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect()
    }

    /// The values of channel `ch` of an (n, c, s) array.
    pub fn channel(x: &[f32], n: usize, c: usize, s: usize, ch: usize) -> Vec<f32> {
        (0..n)
            .flat_map(|b| x[(b * c + ch) * s..(b * c + ch + 1) * s].iter().copied())
            .collect()
    }

    /// (n, c, s) shapes the tensor-kernel tests run on every walk: planes of 77 and 48 items
    /// (a remainder and a multiple of 4), spatial size 1 with a long batch (vec4 items across
    /// channels: one item channel, and three), and planes longer than one workgroup's span.
    pub const SHAPES: [(usize, usize, usize); 5] = [
        (5, 3, 77),
        (4, 6, 48),
        (300, 4, 1),
        (37, 12, 1),
        (2, 2, 5000),
    ];

    /// Calls `f(ctx, what, seed, shape)` for every walk and every shape: each on its own
    /// context pinned to that walk, `what` naming both for assertion messages.
    pub fn on_every_walk(
        shapes: &[(usize, usize, usize)],
        mut f: impl FnMut(&Context, &str, u64, (usize, usize, usize)),
    ) {
        for walk in Walk::ALL {
            let ctx = context(Some(walk));
            for (seed, &(n, c, s)) in shapes.iter().enumerate() {
                f(
                    &ctx,
                    &format!("{walk:?} {n}x{c}x{s}"),
                    seed as u64,
                    (n, c, s),
                );
            }
        }
    }

    /// A workspace and the plan of an (n, c, s) tensor on it.
    pub fn prepare(
        ctx: &Context,
        (n, c, s): (usize, usize, usize),
    ) -> (Workspace, crate::context::Shared<PreparedPlan>) {
        let mut ws = Workspace::new(ctx);
        let prepared = ws.plan(Geometry {
            n: n as u32,
            c: c as u32,
            s: s as u32,
            vec4_ok: true,
            dtype: crate::tensor::DType::F32,
        });
        (ws, prepared)
    }

    /// The partials a reducing kernel wrote to the workspace, one list per channel in task
    /// order.
    pub fn channel_partials(
        ctx: &Context,
        ws: &Workspace,
        plan: &Plan,
        c: usize,
    ) -> Vec<Vec<[f32; 4]>> {
        let tasks = plan.total_tasks as usize;
        let flat = read(ctx, ws.partials_buffer().expect("partials"), c * tasks * 4);
        flat.chunks(tasks * 4)
            .map(|ch| ch.chunks(4).map(|p| [p[0], p[1], p[2], p[3]]).collect())
            .collect()
    }

    /// A tensor holding `data`.
    pub fn tensor(ctx: &Context, data: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(ctx, data, shape).expect("upload")
    }

    /// |got - want| within `rel` of max(1, |want|).
    pub fn close(got: f32, want: f64, rel: f64) -> bool {
        (f64::from(got) - want).abs() <= rel * want.abs().max(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_declares_its_bindings_once_and_in_order() {
        for &kernel in Kernel::ALL {
            let spec = kernel.spec();
            assert!(spec.bindings.len() <= MAX_BINDINGS, "{}", spec.name);
            assert!(spec.bindings.iter().filter(|b| b.role.optional()).count() <= 16);
            let v = Variant {
                kernel,
                walk: None,
                item: ItemWidth::Scalar,
                reduction: None,
                dtype: DType::F32,
                layout: Layout::Contiguous,
                epilogue: Epilogue::NONE,
                workgroup_size: 64,
                statistics: Statistics::Batch,
                to_f16: false,
                own_channel: false,
                present: 0,
            };
            let decls = declarations(spec, &v);
            let tensor = spec.assembly.binds_tensors();
            for (i, b) in spec.bindings.iter().enumerate() {
                assert!(decls.contains(&format!("@binding({i}) var")));
                let ty = if tensor && b.wgsl == "array<Item>" {
                    "array<Stored>"
                } else {
                    b.wgsl
                };
                assert!(decls.contains(&format!(" {}: {ty}", b.name)));
                // The shader uses every binding it is given (the per-block uniform is read by
                // walk.wgsl).
                if b.role != RoleKind::Blocks {
                    assert!(
                        spec.source.contains(b.name),
                        "{} does not use {}",
                        spec.name,
                        b.name
                    );
                }
            }
            // And declares none of its own.
            assert!(!spec.source.contains("@binding"), "{}", spec.name);
        }
    }
}
