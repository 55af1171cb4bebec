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
/// At most this many items per invocation per workgroup task (keeps partial counts exact in f32
/// and leaves enough workgroups for parallelism).
const MAX_ITEMS_PER_INVOCATION: u64 = 16;
/// Aim for at least this many workgroups per tensor pass.
const TARGET_WORKGROUPS: u64 = 512;

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

    /// The pipeline for a variant, compiled on first use.
    pub fn pipeline(
        &self,
        device: &wgpu::Device,
        kernel: Kernel,
        vec4: bool,
        flags: &[(&'static str, bool)],
    ) -> wgpu::ComputePipeline {
        let key = PipelineKey {
            kernel,
            vec4,
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
        let spec = kernel.spec();
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(spec.name),
            source: wgpu::ShaderSource::Wgsl(self.source(kernel, vec4).into()),
        });
        let mut constants: Vec<(&str, f64)> = vec![("WG", spec.workgroup_size as f64)];
        constants.extend(
            flags
                .iter()
                .map(|(name, on)| (*name, f64::from(u8::from(*on)))),
        );
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(spec.name),
            layout: Some(&self.pipeline_layouts[Self::index(kernel)]),
            module: &module,
            entry_point: Some("main"),
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

/// The per-shape parameters every kernel reads (binding 0). Mirrors `Params` in `common.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub channels: u32,
    pub plane: u32,
    pub batch: u32,
    pub tasks: u32,
    pub chunk: u32,
    pub step_planes: u32,
    pub step_items: u32,
    pub count: u32,
    pub eps: f32,
    pub momentum: f32,
    pub cumulative: u32,
    pub update_stats: u32,
}

/// How one tensor shape is cut into workgroup tasks, and the dispatch grids that follow.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    pub params: Params,
    /// Whether the kernels read vec4 items.
    pub vec4: bool,
    /// Grid for the C * tasks workgroups of the tensor passes.
    pub task_grid: [u32; 2],
    /// Grid for one workgroup per channel.
    pub channel_grid: [u32; 2],
}

impl Plan {
    /// Plans a non-empty (N, C, S) tensor. `vec4_ok` says whether the binding allows vec4 reads
    /// (16-byte aligned offset); `max_grid` is the adapter's per-dimension workgroup limit.
    pub fn new(n: u32, c: u32, s: u32, vec4_ok: bool, max_grid: u32) -> Plan {
        let vec4 = vec4_ok && s.is_multiple_of(4);
        let plane = if vec4 { s / 4 } else { s };
        let items = u64::from(n) * u64::from(plane);
        let wg = u64::from(WG_TENSOR);
        let tasks_wanted = TARGET_WORKGROUPS.div_ceil(u64::from(c.max(1))).max(1);
        let per_invocation = items
            .div_ceil(wg * tasks_wanted)
            .clamp(1, MAX_ITEMS_PER_INVOCATION);
        let chunk = wg * per_invocation;
        let tasks = items.div_ceil(chunk).max(1);
        let params = Params {
            channels: c,
            plane,
            batch: n,
            tasks: tasks as u32,
            chunk: chunk as u32,
            step_planes: WG_TENSOR / plane,
            step_items: WG_TENSOR % plane,
            count: n * s,
            ..Params::default()
        };
        Plan {
            params,
            vec4,
            task_grid: grid(u64::from(c) * tasks, max_grid),
            channel_grid: grid(u64::from(c), max_grid),
        }
    }

    /// Number of Welford partials the statistics pass writes.
    pub fn partials(&self) -> u64 {
        u64::from(self.params.channels) * u64::from(self.params.tasks)
    }
}

/// Folds `workgroups` into a 2-D grid whose dimensions stay within `max_dim`; kernels recover
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

    #[test]
    fn grid_folds_and_covers() {
        assert_eq!(grid(10, 65535), [10, 1]);
        let [x, y] = grid(200_000, 65535);
        assert!(x <= 65535 && u64::from(x) * u64::from(y) >= 200_000);
        let [x, y] = grid(17, 4);
        assert!(x <= 4 && x * y >= 17);
    }

    #[test]
    fn plan_covers_every_item() {
        for &(n, c, s) in &[
            (1, 1, 1),
            (2, 3, 5),
            (32, 64, 3136),
            (256, 1024, 1),
            (1, 1, 1 << 22),
        ] {
            for vec4_ok in [false, true] {
                let plan = Plan::new(n, c, s, vec4_ok, 65535);
                let p = plan.params;
                assert!(
                    u64::from(p.tasks) * u64::from(p.chunk) >= u64::from(n) * u64::from(p.plane)
                );
                assert_eq!(p.chunk % WG_TENSOR, 0);
                assert!(p.chunk as u64 * if plan.vec4 { 4 } else { 1 } <= 1 << 24);
                assert_eq!(p.step_planes * p.plane + p.step_items, WG_TENSOR);
            }
        }
    }
}
