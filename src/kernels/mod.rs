//! The WGSL kernels: shader assembly, bind-group layouts and a pipeline cache per device, and the
//! work decomposition ([`Plan`]) shared by every kernel.
//!
//! Each kernel family has one host module named like its shader in `shaders/`:
//! [`stats`] (`stats.wgsl`, `finalize_stats.wgsl`), [`normalize`] (`normalize.wgsl`),
//! [`update_running`] (`update_running.wgsl`), [`backward`] (`backward_reduce.wgsl`,
//! `backward_finalize.wgsl`, `backward_input.wgsl`). Shaders are assembled from `common.wgsl`, an item
//! piece (`item_vec4.wgsl` or `item_scalar.wgsl`), a reduction piece (`reduce_subgroup.wgsl` or
//! `reduce_workgroup.wgsl`) where the kernel reduces, and the kernel's own file.

pub(crate) mod backward;
pub(crate) mod normalize;
pub(crate) mod stats;
pub(crate) mod update_running;

use std::collections::HashMap;
use std::sync::Mutex;

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const ITEM_VEC4: &str = include_str!("../../shaders/item_vec4.wgsl");
const ITEM_SCALAR: &str = include_str!("../../shaders/item_scalar.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("../../shaders/reduce_subgroup.wgsl");
const REDUCE_WORKGROUP: &str = include_str!("../../shaders/reduce_workgroup.wgsl");

/// Invocations per workgroup of the kernels that walk the tensor.
pub(crate) const WG_TENSOR: u32 = 256;
/// At most this many items per invocation in the planes walk (at most 16, the length of the
/// params' reciprocal table; keeps partial counts exact in f32 and leaves enough workgroups for
/// parallelism).
const MAX_ITEMS_PER_INVOCATION: u64 = 16;

/// How a binding is used by a kernel.
#[derive(Clone, Copy)]
pub(crate) enum Slot {
    Uniform,
    Read,
    ReadWrite,
}

/// A kernel's static description: its shader, its bindings (numbered from 0 in order) and
/// workgroup size.
pub(crate) struct KernelSpec {
    pub name: &'static str,
    pub source: &'static str,
    pub slots: &'static [Slot],
    /// Whether the shader uses `reduce_workgroup` (and so a reduction piece).
    pub reduces: bool,
    pub workgroup_size: u32,
}

/// The kernels, in the order of their bind-group layouts in [`Kernels`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Kernel {
    Stats,
    FinalizeStats,
    Normalize,
    UpdateRunning,
    BackwardReduce,
    BackwardFinalize,
    BackwardInput,
}

impl Kernel {
    const ALL: [Kernel; 7] = [
        Kernel::Stats,
        Kernel::FinalizeStats,
        Kernel::Normalize,
        Kernel::UpdateRunning,
        Kernel::BackwardReduce,
        Kernel::BackwardFinalize,
        Kernel::BackwardInput,
    ];

    fn spec(self) -> &'static KernelSpec {
        match self {
            Kernel::Stats => &stats::STATS,
            Kernel::FinalizeStats => &stats::FINALIZE,
            Kernel::Normalize => &normalize::NORMALIZE,
            Kernel::UpdateRunning => &update_running::UPDATE_RUNNING,
            Kernel::BackwardReduce => &backward::REDUCE,
            Kernel::BackwardFinalize => &backward::FINALIZE,
            Kernel::BackwardInput => &backward::INPUT,
        }
    }
}

/// One compiled variant: the kernel, whether items are vec4, and its boolean overrides (bit i
/// is the i-th flag's value; a kernel always passes its flags in the same order).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct PipelineKey {
    kernel: Kernel,
    vec4: bool,
    entry: &'static str,
    wg: u32,
    flags: u32,
}

/// Bind-group layouts (built once per device) and compiled pipelines (built on first use, then
/// reused), keyed by kernel, item width and override constants.
pub(crate) struct Kernels {
    subgroups: bool,
    layouts: Vec<wgpu::BindGroupLayout>,
    pipeline_layouts: Vec<wgpu::PipelineLayout>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
}

impl Kernels {
    pub fn new(device: &wgpu::Device, subgroups: bool) -> Self {
        let mut layouts = Vec::new();
        let mut pipeline_layouts = Vec::new();
        for kernel in Kernel::ALL {
            let spec = kernel.spec();
            let entries: Vec<wgpu::BindGroupLayoutEntry> = spec
                .slots
                .iter()
                .enumerate()
                .map(|(i, slot)| wgpu::BindGroupLayoutEntry {
                    binding: i as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: match slot {
                            Slot::Uniform => wgpu::BufferBindingType::Uniform,
                            Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                            Slot::ReadWrite => {
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
            layouts.push(layout);
            pipeline_layouts.push(pipeline_layout);
        }
        Kernels {
            subgroups,
            layouts,
            pipeline_layouts,
            pipelines: Mutex::new(HashMap::new()),
        }
    }

    pub fn pipelines_created(&self) -> usize {
        self.pipelines.lock().map(|p| p.len()).unwrap_or(0)
    }

    fn index(kernel: Kernel) -> usize {
        Kernel::ALL
            .iter()
            .position(|k| *k == kernel)
            .unwrap_or_default()
    }

    /// The full WGSL source of one variant.
    fn source(&self, kernel: Kernel, vec4: bool) -> String {
        let spec = kernel.spec();
        let mut src = String::with_capacity(16 * 1024);
        src.push_str(COMMON);
        src.push_str(if vec4 { ITEM_VEC4 } else { ITEM_SCALAR });
        if spec.reduces {
            src.push_str(if self.subgroups {
                REDUCE_SUBGROUP
            } else {
                REDUCE_WORKGROUP
            });
        }
        src.push_str(spec.source);
        src
    }

    /// The pipeline for a variant, compiled on first use. Tensor passes give their plan (item
    /// width, walk, workgroup size); the per-channel passes give None (entry point `main`, the
    /// spec's workgroup size).
    pub fn pipeline(
        &self,
        device: &wgpu::Device,
        kernel: Kernel,
        plan: Option<&Plan>,
        flags: &[(&'static str, bool)],
    ) -> wgpu::ComputePipeline {
        let spec = kernel.spec();
        let (vec4, entry, wg) = match plan {
            Some(plan) => (plan.vec4, plan.walk.entry_point(), plan.wg),
            None => (false, "main", spec.workgroup_size),
        };
        let key = PipelineKey {
            kernel,
            vec4,
            entry,
            wg,
            flags: flags
                .iter()
                .enumerate()
                .fold(0, |bits, (i, (_, on))| bits | (u32::from(*on) << i)),
        };
        let mut cache = match self.pipelines.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(p) = cache.get(&key) {
            return p.clone();
        }
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(spec.name),
            source: wgpu::ShaderSource::Wgsl(self.source(kernel, vec4).into()),
        });
        let mut constants: Vec<(&str, f64)> = vec![("WG", f64::from(wg))];
        constants.extend(
            flags
                .iter()
                .map(|(name, on)| (*name, f64::from(u8::from(*on)))),
        );
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(spec.name),
            layout: Some(&self.pipeline_layouts[Self::index(kernel)]),
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                // Every kernel writes its workgroup memory before reading it.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        cache.insert(key, pipeline.clone());
        pipeline
    }

    /// A bind group for `kernel` with `bindings` at 0, 1, 2, ... in order.
    fn bind_group(
        &self,
        device: &wgpu::Device,
        kernel: Kernel,
        bindings: &[Binding],
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry<'_>> = bindings
            .iter()
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
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.spec().name),
            layout: &self.layouts[Self::index(kernel)],
            entries: &entries,
        })
    }
}

/// A buffer range bound to one slot; `size` 0 binds the rest of the buffer.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Binding {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl Binding {
    pub fn whole(buffer: &wgpu::Buffer) -> Self {
        Binding {
            buffer: buffer.clone(),
            offset: 0,
            size: 0,
        }
    }
}

/// The most bindings any kernel has.
const MAX_SLOTS: usize = 8;

/// Keeps at most this many bind groups per cache; a full cache starts over.
const MAX_CACHED_BIND_GROUPS: usize = 256;

/// Bind groups keyed by kernel and exact buffer ranges, so a repeated call with the same
/// tensors creates none. The key is a fixed-size array: a lookup allocates nothing.
#[derive(Default)]
pub(crate) struct BindCache {
    groups: HashMap<(Kernel, [Option<Binding>; MAX_SLOTS]), wgpu::BindGroup>,
}

impl BindCache {
    pub fn get(
        &mut self,
        kernels: &Kernels,
        device: &wgpu::Device,
        kernel: Kernel,
        bindings: &[Binding],
    ) -> wgpu::BindGroup {
        let mut slots: [Option<Binding>; MAX_SLOTS] = Default::default();
        for (slot, b) in slots.iter_mut().zip(bindings) {
            *slot = Some(b.clone());
        }
        let key = (kernel, slots);
        if let Some(group) = self.groups.get(&key) {
            return group.clone();
        }
        if self.groups.len() >= MAX_CACHED_BIND_GROUPS {
            self.groups.clear();
        }
        let group = kernels.bind_group(device, kernel, bindings);
        self.groups.insert(key, group.clone());
        group
    }

    /// Forgets every group (e.g. when a scratch buffer they bind was replaced).
    pub fn clear(&mut self) {
        self.groups.clear();
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }
}

/// The per-dispatch parameters every kernel reads (binding 0). Mirrors `Params` in
/// `common.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub channels: u32,
    pub plane: u32,
    pub row_stride: u32,
    pub row_begin: u32,
    pub rows: u32,
    pub channel_begin: u32,
    pub dispatch_channels: u32,
    pub s_begin: u32,
    pub s_count: u32,
    pub bind_base: u32,
    pub tasks: u32,
    pub chunk: u32,
    pub task_offset: u32,
    pub total_tasks: u32,
    pub count: u32,
    pub eps: f32,
    pub momentum: f32,
    pub cumulative: u32,
    pub update_stats: u32,
    pub _pad: u32,
    /// 1 / (i + 1) for i < 16: the merge ratios of `welford_push` in `common.wgsl`.
    pub recip: [[f32; 4]; 4],
}

/// The limits the planner works within: the adapter's, or lower ones set through
/// [`crate::ContextOptions`] (tests use them to exercise windows and folded grids cheaply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KernelLimits {
    /// Workgroups per grid dimension (the x dimension; y takes the rest).
    pub max_grid: u32,
    /// Bytes one storage binding may cover.
    pub max_binding: u64,
    /// Alignment of binding offsets (at least 16, for vec4 items).
    pub align: u64,
}

/// How a tensor pass walks its data (see `common.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum WalkKind {
    /// Workgroups inside one channel, over chunks of consecutive items.
    Planes,
    /// Runs of LANES invocations, one plane each (planes shorter than a workgroup).
    Runs,
    /// One invocation per item column, down the rows (short planes).
    Columns,
}

impl WalkKind {
    pub fn entry_point(self) -> &'static str {
        match self {
            WalkKind::Planes => "planes",
            WalkKind::Runs => "runs",
            WalkKind::Columns => "columns",
        }
    }
}

/// Workgroup sizes the planes walk chooses from, largest first.
const PLANES_WORKGROUP_SIZES: [u64; 3] = [256, 128, 64];

/// Planes shorter than this many items use the runs walk (at most 128 = 16 * LANES, so a
/// run's steps fit the params' reciprocal table), ...
const COLUMNS_BELOW: u32 = 64;
/// ... or, below this many items (fewer than a run's lanes), the columns walk.
const RUNS_FROM: u32 = LANES;
/// Invocations per run (`LANES` in `common.wgsl`): lavapipe's SIMD width.
const LANES: u32 = 8;
/// Columns walk: aim for at least this many workgroups per block.
const COLUMN_TARGET_WORKGROUPS: u64 = 128;
/// Columns walk: at most this many rows per invocation (at most 16, the length of the params'
/// reciprocal table).
const MAX_ROWS_PER_TASK: u64 = 8;

/// One dispatch's share of a tensor: its params and grid, and the window of every tensor it
/// binds (`bind_base` items from the tensor's start, `bind_items` long).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Block {
    pub params: Params,
    pub grid: [u32; 2],
    pub bind_items: u64,
}

/// How one tensor shape is cut into blocks (each within one storage binding) and workgroup
/// tasks, and the dispatch grids that follow.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    /// Whether the kernels read vec4 items.
    pub vec4: bool,
    pub walk: WalkKind,
    /// Invocations per workgroup of the tensor passes.
    pub wg: u32,
    pub blocks: Vec<Block>,
    /// Grid for one workgroup per channel.
    pub channel_grid: [u32; 2],
}

impl Plan {
    /// Plans a non-empty (N, C, S) tensor. `vec4_ok` says whether every bound tensor allows
    /// vec4 reads (16-byte aligned offsets).
    pub fn new(n: u32, c: u32, s: u32, vec4_ok: bool, limits: &KernelLimits) -> Plan {
        let vec4 = vec4_ok && s.is_multiple_of(4);
        let width: u64 = if vec4 { 4 } else { 1 };
        let item_bytes = 4 * width;
        let plane = (u64::from(s) / width) as u32;
        let (n64, c64, plane64) = (u64::from(n), u64::from(c), u64::from(plane));
        let row_items = c64 * plane64;
        // A window may start up to `align` bytes before its first item.
        let window_items = (limits.max_binding.saturating_sub(limits.align) / item_bytes).max(1);
        let whole = n64 * row_items * item_bytes <= limits.max_binding;
        let walk = if plane >= COLUMNS_BELOW || !(whole || plane64 <= window_items) {
            WalkKind::Planes
        } else if plane >= RUNS_FROM {
            WalkKind::Runs
        } else {
            WalkKind::Columns
        };
        let base = Params {
            channels: c,
            plane,
            row_stride: (row_items) as u32,
            count: n * s,
            recip: std::array::from_fn(|i| std::array::from_fn(|j| 1.0 / (4 * i + j + 1) as f32)),
            ..Params::default()
        };
        // Regions (rows, channels, item range) in order, each with its partial-slot offset.
        struct Region {
            row_begin: u64,
            rows: u64,
            channel_begin: u64,
            channels: u64,
            s_begin: u64,
            s_count: u64,
            task_offset: u64,
            tasks: u64,
        }
        let mut regions = Vec::new();
        // Planes walk: as few segments per plane as K <= MAX_ITEMS_PER_INVOCATION allows, each
        // just long enough to cover the plane; the workgroup size that leaves the fewest
        // invocations idle (the largest within 5% of the best).
        let planes_chunk = |wg: u64| {
            let segments = plane64.div_ceil(wg * MAX_ITEMS_PER_INVOCATION).max(1);
            (segments, wg * plane64.div_ceil(segments * wg).max(1))
        };
        let wg = match walk {
            WalkKind::Columns | WalkKind::Runs => u64::from(WG_TENSOR),
            WalkKind::Planes => {
                let slots = |wg: u64| {
                    let (segments, chunk) = planes_chunk(wg);
                    segments * chunk
                };
                let best = PLANES_WORKGROUP_SIZES
                    .iter()
                    .map(|&w| slots(w))
                    .min()
                    .unwrap_or(1);
                PLANES_WORKGROUP_SIZES
                    .iter()
                    .copied()
                    .find(|&w| slots(w) * 100 <= best * 105)
                    .unwrap_or(u64::from(WG_TENSOR))
            }
        };
        let chunk = match walk {
            WalkKind::Planes => planes_chunk(wg).1,
            WalkKind::Columns => {
                let groups = (c64 * plane64).div_ceil(wg).max(1);
                let blocks_wanted = COLUMN_TARGET_WORKGROUPS.div_ceil(groups);
                n64.div_ceil(blocks_wanted).clamp(1, MAX_ROWS_PER_TASK)
            }
            // A run covers its whole plane.
            WalkKind::Runs => plane64,
        };
        let tasks_of = |rows: u64, s_count: u64| match walk {
            WalkKind::Planes => rows * s_count.div_ceil(chunk).max(1),
            WalkKind::Runs => rows,
            WalkKind::Columns => rows.div_ceil(chunk).max(1) * s_count,
        };
        let full_region = |row_begin, rows, channel_begin, channels, task_offset| Region {
            row_begin,
            rows,
            channel_begin,
            channels,
            s_begin: 0,
            s_count: plane64,
            task_offset,
            tasks: tasks_of(rows, plane64),
        };
        let total_tasks;
        if whole || row_items <= window_items {
            // Blocks of whole rows; each covers every channel.
            let rows_per = if whole {
                n64
            } else {
                (window_items / row_items).max(1)
            };
            let mut offset = 0;
            let mut row = 0;
            while row < n64 {
                let rows = rows_per.min(n64 - row);
                regions.push(full_region(row, rows, 0, c64, offset));
                offset += tasks_of(rows, plane64);
                row += rows;
            }
            total_tasks = offset;
        } else if plane64 <= window_items {
            // A row is larger than a window: blocks of whole planes within each row.
            let per = (window_items / plane64).max(1);
            let tasks = tasks_of(1, plane64);
            for row in 0..n64 {
                let mut ch = 0;
                while ch < c64 {
                    let channels = per.min(c64 - ch);
                    regions.push(full_region(row, 1, ch, channels, row * tasks));
                    ch += channels;
                }
            }
            total_tasks = n64 * tasks;
        } else {
            // A plane is larger than a window: pieces of one plane (planes walk only).
            let pieces = plane64.div_ceil(window_items);
            let per_piece = tasks_of(1, window_items);
            for row in 0..n64 {
                for ch in 0..c64 {
                    for piece in 0..pieces {
                        let s_begin = piece * window_items;
                        regions.push(Region {
                            row_begin: row,
                            rows: 1,
                            channel_begin: ch,
                            channels: 1,
                            s_begin,
                            s_count: window_items.min(plane64 - s_begin),
                            task_offset: (row * pieces + piece) * per_piece,
                            // The last piece is shorter; its spare tasks write empty partials.
                            tasks: per_piece,
                        });
                    }
                }
            }
            total_tasks = n64 * pieces * per_piece;
        }
        let align_items = limits.align / item_bytes;
        let blocks = regions
            .iter()
            .map(|r| {
                let first = (r.row_begin * c64 + r.channel_begin) * plane64 + r.s_begin;
                let last = ((r.row_begin + r.rows - 1) * c64 + r.channel_begin + r.channels - 1)
                    * plane64
                    + r.s_begin
                    + r.s_count;
                let bind_base = if whole {
                    0
                } else {
                    first / align_items * align_items
                };
                let tasks = r.tasks;
                let params = Params {
                    row_begin: r.row_begin as u32,
                    rows: r.rows as u32,
                    channel_begin: r.channel_begin as u32,
                    dispatch_channels: r.channels as u32,
                    s_begin: r.s_begin as u32,
                    s_count: r.s_count as u32,
                    bind_base: bind_base as u32,
                    tasks: tasks as u32,
                    chunk: chunk as u32,
                    task_offset: r.task_offset as u32,
                    total_tasks: total_tasks as u32,
                    ..base
                };
                let workgroups = match walk {
                    WalkKind::Planes => r.channels * tasks,
                    WalkKind::Runs => (r.rows * r.channels).div_ceil(wg / u64::from(LANES)),
                    WalkKind::Columns => {
                        (r.channels * r.s_count).div_ceil(wg) * (tasks / r.s_count)
                    }
                };
                Block {
                    params,
                    grid: grid(workgroups, limits.max_grid),
                    bind_items: last - bind_base,
                }
            })
            .collect();
        Plan {
            vec4,
            walk,
            wg: wg as u32,
            blocks,
            channel_grid: grid(c64, limits.max_grid),
        }
    }

    /// Bytes per item (4, or 16 for vec4).
    pub fn item_bytes(&self) -> u64 {
        if self.vec4 {
            16
        } else {
            4
        }
    }

    /// Number of partials the reduction passes write (C * total_tasks).
    pub fn partials(&self) -> u64 {
        self.blocks.first().map_or(0, |b| {
            u64::from(b.params.channels) * u64::from(b.params.total_tasks)
        })
    }
}

/// Records one dispatch of `pipeline` per block of `plan`, each with its bind group.
pub(crate) fn dispatch_blocks(
    pass: &mut wgpu::ComputePass<'_>,
    pipeline: &wgpu::ComputePipeline,
    plan: &Plan,
    block_groups: &[wgpu::BindGroup],
) {
    pass.set_pipeline(pipeline);
    for (block, group) in plan.blocks.iter().zip(block_groups) {
        pass.set_bind_group(0, group, &[]);
        pass.dispatch_workgroups(block.grid[0], block.grid[1], 1);
    }
}

/// Records one dispatch of `pipeline` with one workgroup per channel.
pub(crate) fn dispatch_channels(
    pass: &mut wgpu::ComputePass<'_>,
    pipeline: &wgpu::ComputePipeline,
    plan: &Plan,
    group: &wgpu::BindGroup,
) {
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, group, &[]);
    pass.dispatch_workgroups(plan.channel_grid[0], plan.channel_grid[1], 1);
}

/// Folds `workgroups` into a 2-D grid whose x dimension stays within `max_dim`; kernels recover
/// the linear index and skip the overhang.
pub(crate) fn grid(workgroups: u64, max_dim: u32) -> [u32; 2] {
    let max_dim = u64::from(max_dim.max(1));
    if workgroups <= max_dim {
        [workgroups as u32, 1]
    } else {
        let y = workgroups.div_ceil(max_dim);
        let x = workgroups.div_ceil(y);
        [x as u32, y as u32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: KernelLimits = KernelLimits {
        max_grid: 65535,
        max_binding: 128 << 20,
        align: 256,
    };

    #[test]
    fn grid_folds_and_covers() {
        assert_eq!(grid(10, 65535), [10, 1]);
        let [x, y] = grid(200_000, 65535);
        assert!(x <= 65535 && u64::from(x) * u64::from(y) >= 200_000);
        let [x, y] = grid(17, 4);
        assert!(x <= 4 && x * y >= 17);
    }

    /// Every element of the tensor is covered by exactly one block, every partial slot by
    /// exactly one task, and every window fits the binding limit.
    fn check_cover(n: u32, c: u32, s: u32, vec4_ok: bool, limits: &KernelLimits) {
        let plan = Plan::new(n, c, s, vec4_ok, limits);
        let width = if plan.vec4 { 4 } else { 1 };
        let plane = s / width;
        let total = (n * c * plane) as usize;
        let mut seen = vec![0u8; total];
        let total_tasks = plan.blocks[0].params.total_tasks;
        let mut slots = vec![0u32; (c * total_tasks) as usize];
        for b in &plan.blocks {
            let p = &b.params;
            assert!(b.bind_items * plan.item_bytes() <= limits.max_binding);
            assert_eq!(u64::from(p.bind_base) * plan.item_bytes() % limits.align, 0);
            for ch in p.channel_begin..p.channel_begin + p.dispatch_channels {
                for r in p.row_begin..p.row_begin + p.rows {
                    for i in p.s_begin..p.s_begin + p.s_count {
                        let g = (r * c + ch) * plane + i;
                        assert!(g >= p.bind_base && u64::from(g - p.bind_base) < b.bind_items);
                        seen[g as usize] += 1;
                    }
                }
                for t in 0..p.tasks {
                    slots[(ch * total_tasks + p.task_offset + t) as usize] += 1;
                }
            }
            if plan.walk == WalkKind::Planes {
                assert_eq!(p.chunk % plan.wg, 0);
                assert!(p.chunk / plan.wg <= MAX_ITEMS_PER_INVOCATION as u32);
                let segments = p.s_count.div_ceil(p.chunk);
                assert_eq!(p.tasks, p.rows * segments);
            } else if plan.walk == WalkKind::Runs {
                assert_eq!(p.tasks, p.rows);
                assert!(p.s_count.div_ceil(LANES) <= 16);
                let planes = u64::from(p.rows * p.dispatch_channels);
                let runs = u64::from(b.grid[0]) * u64::from(b.grid[1]) * u64::from(plan.wg / LANES);
                assert!(runs >= planes);
            } else {
                assert_eq!(p.tasks % p.s_count, 0);
                assert!(u64::from(p.tasks / p.s_count) * u64::from(p.chunk) >= u64::from(p.rows));
            }
            assert!(b.grid[0] <= limits.max_grid);
        }
        assert!(
            seen.iter().all(|&v| v == 1),
            "{n}x{c}x{s}: elements not covered once"
        );
        assert!(
            slots.iter().all(|&v| v == 1),
            "{n}x{c}x{s}: partial slots not covered once"
        );
    }

    #[test]
    fn plans_cover_every_item_once() {
        for &(n, c, s) in &[
            (1, 1, 1),
            (2, 3, 5),
            (32, 64, 3136),
            (256, 1024, 1),
            (4, 2048, 49),
            (1, 1, 1 << 20),
        ] {
            for vec4_ok in [false, true] {
                check_cover(n, c, s, vec4_ok, &LIMITS);
            }
        }
    }

    #[test]
    fn small_windows_split_rows_planes_and_pieces() {
        let tiny = KernelLimits {
            max_grid: 7,
            max_binding: 4096,
            align: 32,
        };
        for &(n, c, s) in &[
            (64, 8, 9),
            (8, 3, 1000),
            (2, 2, 5000),
            (300, 10, 1),
            (3, 5, 7),
        ] {
            for vec4_ok in [false, true] {
                check_cover(n, c, s, vec4_ok, &tiny);
            }
        }
    }
}
