//! The planner: what a call records, as a pure function of the call's description, the device
//! profile and the limits — no wgpu types, no device — so that every plan can be printed and
//! tested on the CPU alone (`bench --explain` prints them).
//!
//! The decisions live here and in the two pieces it composes: `single_dispatch` (whether a
//! call runs in one dispatch, and how), used by the functional layer to record, and the walk
//! plan of the multi-pass path (`ops::plan::Plan`, which the workspace records from).
//! [`plan_call`] puts them together into the list of dispatches a call records:
//!
//! | call | single-dispatch plan | multi-pass plan (per binding window) |
//! |---|---|---|
//! | training forward | `forward_single` (+ `update_running` where the update is not fused) | `stats`, `finalize_stats`, `normalize`, `update_running` |
//! | eval forward | `forward_single` | `normalize` |
//! | backward | `backward_single` | `channel_affine` (through an activation), `backward_reduce`, `backward_finalize`, `backward_input` |
//!
//! f16 tensors on a device without SHADER_F16 (and in a multi-pass backward through an
//! epilogue) add a `convert` dispatch per f16 tensor read or written.
//!
//! Planning needs no device:
//!
//! ```
//! use wgpu_batchnorm::planner::{plan_call, CallDesc, CallKind, Caps, PlanLimits};
//! use wgpu_batchnorm::profile::DeviceProfile;
//! use wgpu_batchnorm::{DType, PassPlan};
//! let desc = CallDesc::nchw(&[4, 2048, 7, 7], DType::F32, CallKind::TrainingForward);
//! let gpu = plan_call(&desc, &DeviceProfile::gpu(32), &PlanLimits::DEFAULT, &Caps::ALL, None);
//! println!("{gpu}"); // the plan and each dispatch
//! assert_eq!(gpu.pass_plan, PassPlan::WorkgroupPerChannel);
//! assert!(gpu.dispatches.iter().all(|d| d.invocations >= 25_088)); // E / 16
//! let cpu = plan_call(&desc, &DeviceProfile::cpu(), &PlanLimits::DEFAULT, &Caps::ALL, None);
//! assert_eq!(cpu.pass_plan, PassPlan::InvocationPerChannel);
//! ```

use crate::device::Context;
use crate::ops::forward_single::{self, single_pass, PassPlan};
use crate::ops::{self, backward_single};
use crate::ops::{ChannelTensor, ItemWidth, KernelLimits, Plan, Target, Walk};
use crate::profile::DeviceProfile;
use crate::tensor::DType;

/// Which call a plan is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// Batch statistics, the running update where the module tracks them.
    TrainingForward,
    /// Running statistics.
    EvalForward,
    /// The training backward through the batch statistics.
    Backward,
}

impl CallKind {
    /// Every kind, for explanations and tests.
    pub const ALL: [CallKind; 3] = [
        CallKind::TrainingForward,
        CallKind::Backward,
        CallKind::EvalForward,
    ];
}

/// The name `bench --explain` prints.
impl std::fmt::Display for CallKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CallKind::TrainingForward => "training forward",
            CallKind::EvalForward => "eval forward",
            CallKind::Backward => "training backward",
        })
    }
}

/// A call as the planner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallDesc {
    /// The geometry the kernels see: (rows, C, S) with S the plane; a channels-last tensor is
    /// (N * spatial, C, 1).
    pub geometry: (u32, u32, u32),
    /// The activations' element type.
    pub dtype: DType,
    /// The call kind.
    pub kind: CallKind,
    /// An activation after the normalization (its backward rebuilds the pre-activation).
    pub activation: bool,
    /// A residual added before the activation.
    pub residual: bool,
    /// Every bound activation tensor starts 16-byte aligned (vec4 items possible).
    pub aligned: bool,
    /// Every bound activation tensor fits one binding at an aligned offset (the
    /// single-dispatch plans bind whole tensors).
    pub whole: bool,
    /// Training forward: the module tracks running statistics (an update runs).
    pub running: bool,
    /// Training forward: with a momentum (not the cumulative average), which the fused
    /// update needs.
    pub momentum: bool,
}

impl CallDesc {
    /// A call on a contiguous (NCHW) tensor of `shape` (N, C, spatial...), aligned and bound
    /// whole, with running statistics and a momentum: the common case.
    pub fn nchw(shape: &[usize], dtype: DType, kind: CallKind) -> CallDesc {
        let s: usize = shape.iter().skip(2).product();
        CallDesc {
            geometry: (
                shape.first().copied().unwrap_or(0) as u32,
                shape.get(1).copied().unwrap_or(0) as u32,
                s as u32,
            ),
            dtype,
            kind,
            activation: false,
            residual: false,
            aligned: true,
            whole: true,
            running: true,
            momentum: true,
        }
    }

    /// The same call on the channels-last form of the tensor: (N * spatial, C, 1).
    pub fn channels_last(mut self) -> CallDesc {
        let (n, c, s) = self.geometry;
        self.geometry = (n * s, c, 1);
        self
    }

    /// Values in the tensor.
    pub(crate) fn elements(&self) -> u64 {
        let (n, c, s) = self.geometry;
        u64::from(n) * u64::from(c) * u64::from(s)
    }

    fn epilogue(&self) -> bool {
        self.activation || self.residual
    }
}

/// What the device can run beyond the base kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// The single-dispatch forward with the running update (10 storage buffers).
    pub fused_update: bool,
    /// The single-dispatch backward through an epilogue (11 storage buffers).
    pub epilogue_backward: bool,
    /// f16 tensors are read in-kernel (SHADER_F16); else through f32 copies.
    pub shader_f16: bool,
}

impl Caps {
    /// A device with every capability.
    pub const ALL: Caps = Caps {
        fused_update: true,
        epilogue_backward: true,
        shader_f16: true,
    };
}

/// One recorded dispatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    /// The kernel (its shader's name).
    pub kernel: &'static str,
    /// Invocations launched (workgroups x workgroup size).
    pub invocations: u64,
    /// Invocations per workgroup.
    pub workgroup_size: u32,
    /// Items (of `values_per_item` values) one invocation reads at most.
    pub items_per_invocation: u64,
    /// Values per item (4 for vec4 items).
    pub values_per_item: u32,
    /// Whether it reads the activations (x, dy or the residual).
    pub reads_activation: bool,
    /// The values of the activation tensor it covers (its binding window's).
    pub elements: u64,
}

/// The whole plan of a call.
#[derive(Clone, Debug, PartialEq)]
pub struct CallPlan {
    /// The call.
    pub desc: CallDesc,
    /// The profile it was planned for.
    pub profile: DeviceProfile,
    /// Single dispatch or multi-pass.
    pub pass_plan: PassPlan,
    /// The multi-pass walk, where the multi-pass plan runs.
    pub walk: Option<Walk>,
    /// Items: one value, vec4 along the plane, or vec4 across four channels.
    pub item: &'static str,
    /// Binding windows of the multi-pass plan (1 where the tensor fits one binding).
    pub windows: usize,
    /// Whether the running update runs inside the forward's dispatch.
    pub fused_update: bool,
    /// Every dispatch, in recording order.
    pub dispatches: Vec<Dispatch>,
}

/// Whether (and how) a call runs in one dispatch on `profile`: the functional layer records
/// exactly this. Eval over planes of one value takes the normalize walk (on lavapipe the
/// columns walk's 16 rows of vec4 items beat one invocation per channel: 256x1024 0.99 copies
/// against 1.09, 1024x256 1.11 against 2.29); a backward through an epilogue only where the
/// device has its kernel; every tensor bound whole.
pub(crate) fn single_dispatch(
    desc: &CallDesc,
    profile: &DeviceProfile,
    caps: &Caps,
    forced: Option<PassPlan>,
) -> Option<ChannelTensor> {
    let (_, _, s) = desc.geometry;
    if !desc.whole {
        return None;
    }
    match desc.kind {
        CallKind::EvalForward if s == 1 && forced.is_none() => return None,
        CallKind::Backward if desc.epilogue() && !caps.epilogue_backward => return None,
        _ => {}
    }
    single_pass(desc.geometry, desc.dtype, profile, forced)
}

/// Whether a training forward on the single-dispatch plan updates the running statistics in
/// its own dispatch: with a momentum (the cumulative average's division by the count stays in
/// `update_running.wgsl`), a non-empty batch, and a device with the kernel's 10 storage
/// buffers per stage.
pub(crate) fn fuses_update(single: bool, momentum: bool, nonempty: bool, caps: &Caps) -> bool {
    single && momentum && nonempty && caps.fused_update
}

/// Whether a call's f16 tensors go through f32 copies converted at the call's edges: on a
/// device without SHADER_F16, and for a multi-pass backward through an epilogue, whose dz
/// passes from the reduction to grad_input in memory, in f32 (the one-dispatch backward keeps
/// dz in registers, so f16 stays in-kernel there).
pub(crate) fn f16_through_copies(
    kind: CallKind,
    epilogue: bool,
    single: bool,
    caps: &Caps,
) -> bool {
    !caps.shader_f16 || (kind == CallKind::Backward && epilogue && !single)
}

fn item_name(item: ItemWidth) -> &'static str {
    match item {
        ItemWidth::Scalar => "scalar",
        ItemWidth::Vec4 => "vec4 along the plane",
        ItemWidth::Channels4 => "vec4 across 4 channels",
    }
}

/// The plan of `desc` on `target` (profile, limits) for a device with `caps`; `forced` pins
/// the pass plan as [`crate::ContextOptions`]' test switch does.
pub fn plan_call(
    desc: &CallDesc,
    profile: &DeviceProfile,
    limits: &PlanLimits,
    caps: &Caps,
    forced: Option<PassPlan>,
) -> CallPlan {
    let target = Target {
        limits: limits.kernel_limits(),
        profile: *profile,
        force_walk: None,
    };
    let (n, c, s) = desc.geometry;
    let elements = desc.elements();
    let mut dispatches = Vec::new();
    // One f16 tensor's conversion, window by window as `record_convert` dispatches it.
    let convert_spec = if caps.shader_f16 {
        &ops::convert::NATIVE_SPEC
    } else {
        &ops::convert::SPEC
    };
    let convert_wg = convert_spec.workgroup_size;
    let convert = || {
        ops::convert::windows(elements, &target.limits).map(move |(_, n, grid)| Dispatch {
            kernel: "convert",
            invocations: u64::from(grid[0]) * u64::from(grid[1]) * u64::from(convert_wg),
            workgroup_size: convert_wg,
            items_per_invocation: 1,
            values_per_item: 2,
            reads_activation: true,
            elements: n,
        })
    };
    // f16 tensors read and written: x (and dy) and the residual in, y (or grad_input and
    // grad_residual) out.
    let residual = usize::from(desc.residual);
    let (inputs, outputs) = match desc.kind {
        CallKind::Backward => (2 + residual, 1 + residual),
        _ => (1 + residual, 1),
    };
    let single = if elements == 0 {
        None
    } else {
        single_dispatch(desc, profile, caps, forced)
    };
    let copies = desc.dtype == DType::F16
        && f16_through_copies(desc.kind, desc.epilogue(), single.is_some(), caps);
    let fused_update = desc.kind == CallKind::TrainingForward
        && desc.running
        && fuses_update(single.is_some(), desc.momentum, elements > 0, caps);
    let mut plan = CallPlan {
        desc: *desc,
        profile: *profile,
        pass_plan: PassPlan::MultiPass,
        walk: None,
        item: "",
        windows: 0,
        fused_update,
        dispatches: Vec::new(),
    };
    if elements > 0 && copies {
        dispatches.extend((0..inputs).flat_map(|_| convert()));
    }
    // Per-channel passes, sized from their kernels' specs: a workgroup per channel over the
    // channel grid (finalize_stats, backward_finalize), or one workgroup looping over the
    // channels (channel_affine, update_running).
    let channel_pass = |spec: &ops::KernelSpec, channel_grid: [u32; 2]| Dispatch {
        kernel: spec.name,
        invocations: u64::from(channel_grid[0])
            * u64::from(channel_grid[1])
            * u64::from(spec.workgroup_size),
        workgroup_size: spec.workgroup_size,
        items_per_invocation: 1,
        values_per_item: 1,
        reads_activation: false,
        elements: 0,
    };
    let channel_loop = |spec: &ops::KernelSpec| Dispatch {
        kernel: spec.name,
        invocations: u64::from(spec.workgroup_size),
        workgroup_size: spec.workgroup_size,
        items_per_invocation: u64::from(c).div_ceil(u64::from(spec.workgroup_size)),
        values_per_item: 1,
        reads_activation: false,
        elements: 0,
    };
    let update = channel_loop(&ops::update_running::SPEC);
    if let Some(how) = single {
        plan.pass_plan = if how.own_channel {
            PassPlan::InvocationPerChannel
        } else {
            PassPlan::WorkgroupPerChannel
        };
        plan.item = item_name(how.item);
        let count = u64::from(n) * u64::from(s);
        let wg = u64::from(how.workgroup_size);
        // A workgroup per channel, or a channel per invocation in workgroups of `wg`.
        let invocations = u64::from(how.workgroups(c)) * wg;
        let kernel = match desc.kind {
            CallKind::TrainingForward if fused_update => forward_single::UPDATE_SPEC.name,
            CallKind::TrainingForward | CallKind::EvalForward => forward_single::SPEC.name,
            CallKind::Backward if desc.epilogue() => backward_single::EPILOGUE_SPEC.name,
            CallKind::Backward => backward_single::SPEC.name,
        };
        dispatches.push(Dispatch {
            kernel,
            invocations,
            workgroup_size: how.workgroup_size,
            items_per_invocation: if how.own_channel {
                count
            } else {
                count.div_ceil(wg)
            },
            values_per_item: how.item.lanes() as u32,
            reads_activation: true,
            elements,
        });
        if desc.kind == CallKind::TrainingForward && desc.running && !fused_update {
            dispatches.push(update);
        }
    } else if elements > 0 {
        let walk_plan = Plan::new(n, c, s, desc.aligned, desc.dtype, &target);
        let g = walk_plan.geometry;
        plan.walk = Some(g.walk);
        plan.item = item_name(walk_plan.item);
        plan.windows = walk_plan.blocks.len();
        let values_per_item = walk_plan.item.lanes() as u32;
        let items = match g.walk {
            Walk::Planes => g.task_items / g.wg,
            Walk::Runs => g.task_items.div_ceil(g.lanes),
            Walk::Columns => g.task_rows,
        };
        let pass = |spec: &'static ops::KernelSpec| {
            let kernel = spec.name;
            walk_plan.blocks.iter().map(move |b| {
                let p = &b.params;
                let covered = u64::from(p.rows)
                    * u64::from(p.dispatch_channels)
                    * u64::from(p.s_count)
                    * u64::from(values_per_item);
                Dispatch {
                    kernel,
                    invocations: u64::from(b.grid[0]) * u64::from(b.grid[1]) * g.wg,
                    workgroup_size: g.wg as u32,
                    items_per_invocation: items,
                    values_per_item,
                    reads_activation: true,
                    elements: covered,
                }
            })
        };
        match desc.kind {
            CallKind::TrainingForward => {
                dispatches.extend(pass(&ops::stats::SPEC));
                dispatches.push(channel_pass(
                    &ops::finalize_stats::SPEC,
                    walk_plan.channel_grid,
                ));
                dispatches.extend(pass(&ops::normalize::SPEC));
                if desc.running {
                    dispatches.push(update);
                }
            }
            CallKind::EvalForward => dispatches.extend(pass(&ops::normalize::SPEC)),
            CallKind::Backward => {
                if desc.activation {
                    dispatches.push(channel_loop(&ops::channel_affine::SPEC));
                }
                dispatches.extend(pass(&ops::backward_reduce::SPEC));
                dispatches.push(channel_pass(
                    &ops::backward_finalize::SPEC,
                    walk_plan.channel_grid,
                ));
                dispatches.extend(pass(&ops::backward_input::SPEC));
            }
        }
    } else if desc.kind == CallKind::TrainingForward && desc.running {
        // An empty batch still counts (num_batches_tracked) and updates nothing else.
        dispatches.push(update);
    }
    if elements > 0 && copies {
        dispatches.extend((0..outputs).flat_map(|_| convert()));
    }
    plan.dispatches = dispatches;
    plan
}

/// The limits a plan is made within (a device's, or lower ones for tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    /// Workgroups per grid dimension.
    pub max_workgroups_per_dimension: u32,
    /// Bytes per storage binding.
    pub max_storage_binding: u64,
    /// Storage-buffer offset alignment in bytes.
    pub storage_offset_alignment: u64,
}

impl PlanLimits {
    /// WebGPU's defaults for the grid and offsets, with 128 MiB bindings (lavapipe's).
    pub const DEFAULT: PlanLimits = PlanLimits {
        max_workgroups_per_dimension: 65535,
        max_storage_binding: 128 << 20,
        storage_offset_alignment: 256,
    };

    pub(crate) fn kernel_limits(&self) -> KernelLimits {
        let align = self.storage_offset_alignment.max(16);
        KernelLimits {
            max_grid: self.max_workgroups_per_dimension.max(1),
            max_binding: (self.max_storage_binding.max(2 * align)) / align * align,
            align,
        }
    }

    pub(crate) fn from_kernel_limits(k: &KernelLimits) -> PlanLimits {
        PlanLimits {
            max_workgroups_per_dimension: k.max_grid,
            max_storage_binding: k.max_binding,
            storage_offset_alignment: k.align,
        }
    }
}

impl std::fmt::Display for CallPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (n, c, s) = self.desc.geometry;
        write!(
            f,
            "{} of ({n}, {c}, {s}) {:?} on the {}: {:?}",
            self.desc.kind, self.desc.dtype, self.profile, self.pass_plan
        )?;
        if let Some(w) = self.walk {
            write!(f, ", {w:?} walk, {} window(s)", self.windows)?;
        }
        if !self.item.is_empty() {
            write!(f, ", items {}", self.item)?;
        }
        if self.fused_update {
            write!(f, ", running update fused")?;
        }
        writeln!(f)?;
        for d in &self.dispatches {
            writeln!(
                f,
                "  {:<26} {:>10} invocations  wg {:>3}  {:>5} item(s) of {} per invocation{}",
                d.kernel,
                d.invocations,
                d.workgroup_size,
                d.items_per_invocation,
                d.values_per_item,
                if d.reads_activation {
                    "  reads activations"
                } else {
                    ""
                }
            )?;
        }
        Ok(())
    }
}

/// The planning queries of a context: its device's capabilities and the plans of calls on it.
impl Context {
    /// What this context's device can run beyond the base kernels.
    pub(crate) fn caps(&self) -> Caps {
        let pipelines = ops::Pipelines::of(self);
        Caps {
            fused_update: pipelines.has(crate::ops::Kernel::ForwardSingleUpdate),
            epilogue_backward: pipelines.has(crate::ops::Kernel::BackwardSingleEpilogue),
            shader_f16: self.adapter().shader_f16,
        }
    }

    /// The plan of `desc` on this context's device (profile, limits, kernels): what a call
    /// of that description records, for printing (`bench --explain`) and tests.
    pub fn plan_call(&self, desc: &CallDesc) -> CallPlan {
        plan_call(
            desc,
            self.profile(),
            &PlanLimits::from_kernel_limits(self.limits()),
            &self.caps(),
            self.forced_pass_plan(),
        )
    }
}

/// The shapes `examples/bench` runs (and the planner's tests hold to the GPU profile's
/// invariants): ResNet stages, `(N, C)` after a linear layer, large planes, an image input.
pub const BENCH_SHAPES: &[&[usize]] = &[
    &[32, 64, 56, 56],
    &[64, 256, 14, 14],
    &[256, 1024],
    &[8, 32, 128, 128],
    &[16, 3, 224, 224],
    &[4, 2048, 7, 7],
    &[16, 64, 256, 256],
    // 64 MiB: the size the upload/readback target is stated for.
    &[16, 64, 128, 128],
];

/// The batch-norm layers of torchvision's ResNet-50 on 224 x 224 images, in forward order: the
/// input shape of each of its 53 `BatchNorm2d`s at batch `batch` (the stem, then per
/// bottleneck bn1, bn2, bn3 and, in each stage's first block, the downsample's).
pub fn resnet50_batchnorm_shapes(batch: usize) -> Vec<[usize; 4]> {
    let mut shapes = vec![[batch, 64, 112, 112]];
    // (blocks, width, output side); a stage's first block runs bn1 at the input side.
    let stages = [(3, 64, 56), (4, 128, 28), (6, 256, 14), (3, 512, 7)];
    let mut side_in = 56;
    for (blocks, width, side) in stages {
        for block in 0..blocks {
            let first_side = if block == 0 { side_in } else { side };
            shapes.push([batch, width, first_side, first_side]);
            shapes.push([batch, width, side, side]);
            shapes.push([batch, 4 * width, side, side]);
            if block == 0 {
                shapes.push([batch, 4 * width, side, side]);
            }
        }
        side_in = side;
    }
    shapes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::plan::BlockParams;

    fn shapes() -> Vec<Vec<usize>> {
        let mut all: Vec<Vec<usize>> = BENCH_SHAPES.iter().map(|s| s.to_vec()).collect();
        for batch in [1, 8, 64] {
            all.extend(resnet50_batchnorm_shapes(batch).iter().map(|s| s.to_vec()));
        }
        // Random shapes, sizes that are not powers of two among them.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % m) as usize + 1
        };
        for _ in 0..60 {
            let rank = 2 + next(3);
            let mut shape = vec![next(40), next(300)];
            while shape.len() < rank {
                shape.push(next(30));
            }
            all.push(shape);
        }
        all
    }

    /// Every call description of a shape the planner must serve.
    fn descs(shape: &[usize]) -> Vec<CallDesc> {
        let mut out = Vec::new();
        for kind in CallKind::ALL {
            for dtype in [DType::F32, DType::F16] {
                for (activation, residual) in [(false, false), (true, true)] {
                    let d = CallDesc {
                        activation,
                        residual,
                        ..CallDesc::nchw(shape, dtype, kind)
                    };
                    out.push(d);
                    if shape.len() > 2 {
                        out.push(d.channels_last());
                    }
                }
            }
        }
        out
    }

    /// A CPU port of `span_start` in `shaders/pieces/walk.wgsl`: the first item, stride and count of
    /// invocation `lid` of workgroup `g` in a block.
    fn span(p: &BlockParams, walk: Walk, wg: u32, lanes: u32, g: u32, lid: u32) -> (u32, u32, u32) {
        match walk {
            Walk::Planes => {
                let segments = p.s_count.div_ceil(p.task_items);
                let valid = g < p.dispatch_channels * p.tasks;
                let task = if valid { g } else { 0 };
                let rest = task / segments;
                let segment = task - rest * segments;
                let n = rest / p.dispatch_channels;
                let channel = p.channel_begin + (rest - n * p.dispatch_channels);
                let begin = segment * p.task_items;
                let len = if n < p.rows {
                    p.task_items.min(p.s_count - begin)
                } else {
                    0
                };
                let steps = p.task_items / wg;
                let run = lid / lanes;
                let first = run * lanes * steps + (lid - run * lanes);
                let start = (p.row_begin + n) * p.row_stride
                    + channel * p.plane
                    + p.s_begin
                    + begin
                    + first
                    - p.bind_base;
                let count = if valid && first < len {
                    steps.min((len - first).div_ceil(lanes))
                } else {
                    0
                };
                (start, lanes, count)
            }
            Walk::Runs => {
                let index = g * (wg / lanes) + lid / lanes;
                let valid = index < p.rows * p.dispatch_channels;
                let n = index / p.dispatch_channels;
                let lane = lid % lanes;
                let channel = p.channel_begin
                    + if valid {
                        index - n * p.dispatch_channels
                    } else {
                        0
                    };
                let start = (p.row_begin + n) * p.row_stride + channel * p.plane + p.s_begin + lane
                    - p.bind_base;
                let count = if valid && lane < p.s_count {
                    (p.s_count - lane).div_ceil(lanes)
                } else {
                    0
                };
                (start, lanes, count)
            }
            Walk::Columns => {
                let columns = p.dispatch_channels * p.s_count;
                let j = g * wg + lid;
                let block = j / columns;
                let valid = block < p.tasks / p.s_count;
                let column = j - block * columns;
                let local = if valid { column / p.s_count } else { 0 };
                let item = column - local * p.s_count;
                let channel = p.channel_begin + local;
                let row = block * p.task_rows;
                let start =
                    (p.row_begin + row) * p.row_stride + channel * p.plane + p.s_begin + item
                        - p.bind_base;
                let count = if valid {
                    p.task_rows.min(p.rows.saturating_sub(row))
                } else {
                    0
                };
                (start, p.row_stride, count)
            }
        }
    }

    /// Whether the items one run reads at one step are coalesced: in lane order they form at
    /// most two stretches of neighbouring items (a run crossing the end of a row or plane),
    /// or stretches of at least one 32-byte memory sector each (a run spread over the rows of
    /// a narrow channels-last tensor reads whole sectors of each).
    fn coalesced(items: &[u32], item_bytes: u64) -> bool {
        let mut stretches = vec![1u64];
        for pair in items.windows(2) {
            if pair[1] == pair[0] + 1 {
                *stretches.last_mut().unwrap() += 1;
            } else {
                stretches.push(1);
            }
        }
        let last = stretches.len() - 1;
        stretches.len() <= 2
            || stretches
                .iter()
                .enumerate()
                .all(|(i, &len)| len * item_bytes >= 32 || i == 0 || i == last)
    }

    /// Runs of invocations read coalesced items at every step (see [`coalesced`]), on a CPU
    /// port of the walks of the multi-pass plan (or of the workgroup-per-channel traversal of
    /// the single-dispatch plan), checked on the first, a middle and the last workgroup of
    /// each block.
    fn check_coalesced(plan: &CallPlan) {
        let desc = &plan.desc;
        let profile = &plan.profile;
        let target = Target {
            limits: PlanLimits::DEFAULT.kernel_limits(),
            profile: *profile,
            force_walk: None,
        };
        let (n, c, s) = desc.geometry;
        if desc.elements() == 0 {
            return;
        }
        let lanes = profile.run_width;
        let check_run = |run: &[(u32, u32, u32)], item_bytes: u64, at: &dyn std::fmt::Display| {
            let steps = run.iter().map(|s| s.2).max().unwrap_or(0);
            for k in 0..steps {
                let items: Vec<u32> = run
                    .iter()
                    .filter(|s| s.2 > k)
                    .map(|s| s.0 + k * s.1)
                    .collect();
                assert!(
                    coalesced(&items, item_bytes),
                    "{plan}{at}: step {k} reads {items:?}"
                );
            }
        };
        if plan.pass_plan == PassPlan::WorkgroupPerChannel {
            // `shared_channel` in forward_single.wgsl: value lid + k * WG of the channel, in
            // (row, plane) order.
            let how = single_dispatch(desc, profile, &Caps::ALL, None).unwrap();
            let wg = how.workgroup_size;
            let count = n * s;
            let item_bytes = how.item.lanes() * desc.dtype.size();
            for ch in [0, c / how.lanes() / 2, c / how.lanes() - 1] {
                let spans: Vec<_> = (0..wg)
                    .map(|lid| {
                        let v = lid;
                        let (r, i) = (v / s, v % s);
                        let steps = if lid < count {
                            (count - lid).div_ceil(wg)
                        } else {
                            0
                        };
                        (r * c * s + ch * s + i, wg, steps)
                    })
                    .collect();
                // Value v + k * WG sits k * WG values further in (row, plane) order, which is
                // memory order only within a row: check step 0 exactly, the rest by the same
                // pattern shifted (the traversal is periodic in WG).
                for run in spans.chunks(lanes as usize) {
                    let first: Vec<(u32, u32, u32)> =
                        run.iter().map(|&(i, _, st)| (i, 0, st.min(1))).collect();
                    check_run(&first, item_bytes, &format_args!("channel {ch}"));
                }
            }
            return;
        }
        let walk_plan = Plan::new(n, c, s, desc.aligned, desc.dtype, &target);
        let g = walk_plan.geometry;
        let wg = g.wg as u32;
        for b in &walk_plan.blocks {
            let groups = b.grid[0] * b.grid[1];
            for w in [0, groups / 2, groups.saturating_sub(1)] {
                let spans: Vec<_> = (0..wg)
                    .map(|lid| span(&b.params, g.walk, wg, lanes, w, lid))
                    .collect();
                for run in spans.chunks(lanes as usize) {
                    let at = format_args!("{:?} walk, workgroup {w}", g.walk);
                    check_run(run, walk_plan.item_bytes, &at);
                }
            }
        }
    }

    /// The GPU profile's invariants, over the bench shapes, ResNet-50's 53 batch-norm shapes
    /// at batch 1, 8 and 64, and random shapes, in every call kind, dtype, memory format and
    /// epilogue: every dispatch that reads the activations launches at least
    /// min(E / 16, 65536) invocations (E the values of its window), in workgroups of a
    /// multiple of the run width; runs read neighbouring items; one invocation never owns a
    /// channel.
    #[test]
    fn gpu_plans_fill_the_device_and_read_coalesced() {
        for profile in [DeviceProfile::gpu(32), DeviceProfile::gpu(64)] {
            for shape in shapes() {
                for desc in descs(&shape) {
                    for caps in [
                        Caps::ALL,
                        Caps {
                            shader_f16: false,
                            ..Caps::ALL
                        },
                    ] {
                        let plan = plan_call(&desc, &profile, &PlanLimits::DEFAULT, &caps, None);
                        assert_ne!(plan.pass_plan, PassPlan::InvocationPerChannel, "{plan}");
                        assert!(!plan.dispatches.is_empty(), "{plan}");
                        for d in plan.dispatches.iter().filter(|d| d.reads_activation) {
                            let floor = profile.invocation_floor(d.elements);
                            assert!(d.invocations >= floor, "{plan}needs {floor} in {d:?}");
                            assert_eq!(d.workgroup_size % profile.run_width, 0, "{plan}");
                        }
                        if plan.pass_plan == PassPlan::WorkgroupPerChannel {
                            assert!(desc.geometry.2 >= profile.run_width, "{plan}");
                        }
                        check_coalesced(&plan);
                    }
                }
            }
        }
    }

    /// The invariants are not vacuous: today's CPU plans break them where a GPU suffers, with a
    /// channel per invocation on (256, 1024) and 4x2048x7x7.
    #[test]
    fn cpu_plans_would_starve_a_gpu() {
        let gpu = DeviceProfile::gpu(32);
        for shape in [&[256, 1024][..], &[4, 2048, 7, 7]] {
            let desc = CallDesc::nchw(shape, DType::F32, CallKind::TrainingForward);
            let plan = plan_call(
                &desc,
                &DeviceProfile::cpu(),
                &PlanLimits::DEFAULT,
                &Caps::ALL,
                None,
            );
            assert_eq!(plan.pass_plan, PassPlan::InvocationPerChannel, "{plan}");
            let d = &plan.dispatches[0];
            assert!(d.invocations < gpu.invocation_floor(d.elements), "{plan}");
        }
    }

    /// The CPU profile keeps its plans: the multi-pass walk by plane length, a channel per
    /// invocation for many short channels.
    #[test]
    fn cpu_plans_follow_the_lavapipe_measurements() {
        let cpu = DeviceProfile::cpu();
        let plan = |shape: &[usize], kind| {
            plan_call(
                &CallDesc::nchw(shape, DType::F32, kind),
                &cpu,
                &PlanLimits::DEFAULT,
                &Caps::ALL,
                None,
            )
        };
        let p = plan(&[32, 64, 56, 56], CallKind::TrainingForward);
        assert_eq!(
            (p.pass_plan, p.walk),
            (PassPlan::MultiPass, Some(Walk::Planes))
        );
        let kernels: Vec<_> = p.dispatches.iter().map(|d| d.kernel).collect();
        assert_eq!(
            kernels,
            ["stats", "finalize_stats", "normalize", "update_running"]
        );
        let p = plan(&[4, 2048, 7, 7], CallKind::TrainingForward);
        assert_eq!(p.pass_plan, PassPlan::InvocationPerChannel);
        assert!(p.fused_update);
        assert_eq!(p.dispatches.len(), 1, "{p}");
        let p = plan(&[256, 1024], CallKind::EvalForward);
        assert_eq!(
            (p.pass_plan, p.walk),
            (PassPlan::MultiPass, Some(Walk::Columns))
        );
        let p = plan(&[64, 256, 14, 14], CallKind::Backward);
        let kernels: Vec<_> = p.dispatches.iter().map(|d| d.kernel).collect();
        assert_eq!(
            kernels,
            ["backward_reduce", "backward_finalize", "backward_input"]
        );
    }

    #[test]
    fn resnet50_has_53_batchnorm_layers() {
        let shapes = resnet50_batchnorm_shapes(8);
        assert_eq!(shapes.len(), 53);
        assert_eq!(shapes[0], [8, 64, 112, 112]);
        assert_eq!(shapes[52], [8, 2048, 7, 7]);
        let channels: usize = shapes.iter().map(|s| s[1]).sum();
        // torchvision's resnet50: 26,560 batch-norm channels (53,120 affine parameters).
        assert_eq!(channels, 26_560);
    }
}
