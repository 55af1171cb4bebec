//! Layouts and pipelines: built once per device (the layouts on first use, each pipeline the
//! first time its variant is recorded) and kept in the device's store
//! ([`crate::device::Compiled`]), so every module, tensor and thread on a device shares them.

use super::assembly::{presence_constant, source, Assembly};
use super::bindings::{Access, MAX_BINDINGS};
use super::plan::Plan;
use super::variant::{Reduction, Specialize, Statistics, Variant};
use super::Kernel;
use crate::device::{Compiled, Context, Layouts};
use crate::tensor::Binding;

/// The op layer's view of a device's store: what it needs to build and find pipelines.
#[derive(Clone, Copy)]
pub(crate) struct Pipelines<'a> {
    device: &'a wgpu::Device,
    compiled: &'a Compiled,
    layouts: &'a Layouts,
    reduction: Reduction,
    /// Invocations per run of the walks (`LANES` in walk.wgsl): the profile's run width.
    run_width: u32,
    /// [`crate::ContextOptions::read_write_bindings`]: the context's layouts and shaders
    /// declare every storage binding read_write.
    read_write: bool,
}

impl std::fmt::Debug for Pipelines<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipelines")
            .field("reduction", &self.reduction)
            .field("compiled", &self.compiled.created())
            .finish()
    }
}

impl<'a> Pipelines<'a> {
    /// The pipelines of `ctx`'s device (building its layouts the first time).
    pub fn of(ctx: &'a Context) -> Self {
        let device = ctx.device();
        let compiled = ctx.compiled();
        Pipelines {
            device,
            compiled,
            layouts: compiled
                .layouts
                .get_or_init(|| layouts(device, ctx.inner.read_write_bindings)),
            reduction: if ctx.adapter().subgroups {
                Reduction::Subgroup
            } else {
                Reduction::Workgroup
            },
            run_width: ctx.profile().run_width,
            read_write: ctx.inner.read_write_bindings,
        }
    }

    /// The device.
    pub fn device(&self) -> &'a wgpu::Device {
        self.device
    }

    /// What an absent optional binding at `index` binds.
    pub fn unbound(&self, index: usize, writes: bool) -> Binding {
        let l = self.layouts;
        if writes {
            Binding {
                buffer: l.unbound_write.clone(),
                offset: index as u64 * l.unbound_stride,
                size: 16,
            }
        } else {
            Binding::whole(&l.unbound_read)
        }
    }

    /// The bind-group layout of `kernel`; None where the device cannot run it.
    pub fn layout(&self, kernel: Kernel) -> Option<&'a wgpu::BindGroupLayout> {
        self.layouts.bind_groups[kernel.index()].as_ref()
    }

    /// Whether the device can run `kernel` (its storage buffers within the device's limit).
    pub fn has(&self, kernel: Kernel) -> bool {
        self.layout(kernel).is_some()
    }

    /// The variant of `kernel` for `plan` (tensor kernels) with these bindings bound.
    pub fn variant(
        &self,
        kernel: Kernel,
        plan: Option<&Plan>,
        special: Specialize,
        bound: &[Option<Binding>; MAX_BINDINGS],
    ) -> Variant {
        Variant::new(kernel, plan, special, bound, self.reduction)
    }

    /// The pipeline of a variant, compiled on first use; None where the device cannot run it.
    pub fn pipeline(&self, v: &Variant) -> Option<wgpu::ComputePipeline> {
        let layout = self.layouts.pipelines[v.kernel.index()].as_ref()?;
        let key = v.key();
        let mut cache = match self.compiled.pipelines.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(p) = cache.get(&key) {
            return Some(p.clone());
        }
        let spec = v.kernel.spec();
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(spec.name),
                source: wgpu::ShaderSource::Wgsl(source(v, self.read_write).into()),
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
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
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
        cache.insert(key, pipeline.clone());
        Some(pipeline)
    }
}

/// Every kernel's bind-group and pipeline layout, from its bindings struct (a kernel the
/// device cannot bind gets none; [`Pipelines::has`] tells its callers), and the buffers absent
/// optional bindings bind.
fn layouts(device: &wgpu::Device, read_write: bool) -> Layouts {
    let mut bind_groups = Vec::new();
    let mut pipelines = Vec::new();
    let max_storage = device.limits().max_storage_buffers_per_shader_stage;
    for &kernel in Kernel::ALL {
        let spec = kernel.spec();
        let storage = spec.bindings.iter().filter(|b| b.access != Access::Uniform);
        if storage.count() > max_storage as usize {
            bind_groups.push(None);
            pipelines.push(None);
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
                        Access::Read => wgpu::BufferBindingType::Storage {
                            read_only: !read_write,
                        },
                        Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
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
        bind_groups.push(Some(layout));
        pipelines.push(Some(pipeline_layout));
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
    Layouts {
        bind_groups,
        pipelines,
        unbound_read: unbound(16),
        unbound_write: unbound(unbound_stride * MAX_BINDINGS as u64),
        unbound_stride,
    }
}
