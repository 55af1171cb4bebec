//! Benchmark helpers: the WGSL copy kernel that sets the memory-bandwidth floor batch norm is
//! measured against, and a GPU timer (timestamp queries where the adapter has them, else wall
//! clock around submit + wait). Used by `examples/bench.rs` and `benches/`.

use std::time::Instant;

use crate::device::block_on;
use crate::device::read_bytes;
use crate::device::Context;
use crate::error::{Error, Result};
use crate::ops::plan::grid;
use crate::ops::stream::StreamBindings;
use crate::tensor::Tensor;
use crate::workspace::{Geometry, Workspace};

const COPY_WG: u32 = 256;

/// `dst = src` with one vec4 per invocation (`shaders/copy.wgsl`).
pub struct CopyKernel {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

impl CopyKernel {
    /// Compiles the kernel.
    pub fn new(ctx: &Context) -> Result<Self> {
        let device = ctx.device();
        ctx.scoped(|| {
            let entry = |binding, read_only| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            };
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("copy"),
                entries: &[entry(0, true), entry(1, false)],
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("copy"),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("copy"),
                source: wgpu::ShaderSource::Wgsl(include_str!("../shaders/copy.wgsl").into()),
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("copy"),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[("WG", f64::from(COPY_WG))],
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
            Ok(CopyKernel { layout, pipeline })
        })
    }

    /// Records `dst = src` (same element count, a multiple of 4, 16-byte aligned offsets),
    /// one dispatch per binding window.
    pub fn encode(
        &self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        src: &Tensor,
        dst: &Tensor,
    ) -> Result<()> {
        let bytes = src.size_bytes();
        if dst.size_bytes() != bytes || !bytes.is_multiple_of(16) {
            return Err(Error::ShapeMismatch {
                what: "copy kernel (equal sizes, a multiple of 4 elements)".into(),
                expected: src.shape().to_vec(),
                got: dst.shape().to_vec(),
            });
        }
        let limits = ctx.device().limits();
        let align = u64::from(limits.min_storage_buffer_offset_alignment).max(16);
        let window = limits.max_storage_buffer_binding_size / align * align;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("copy"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        let mut start = 0;
        while start < bytes {
            let len = window.min(bytes - start);
            fn binding(t: &Tensor, start: u64, len: u64) -> wgpu::BufferBinding<'_> {
                wgpu::BufferBinding {
                    buffer: t.buffer(),
                    offset: t.offset() + start,
                    size: wgpu::BufferSize::new(len),
                }
            }
            let group = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("copy"),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(binding(src, start, len)),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::Buffer(binding(dst, start, len)),
                    },
                ],
            });
            let [x, y] = grid(
                (len / 16).div_ceil(u64::from(COPY_WG)),
                limits.max_compute_workgroups_per_dimension,
            );
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(x, y, 1);
            start += len;
        }
        Ok(())
    }
}

/// `y = x` through the tensor kernels' walk (`shaders/stream.wgsl`) over the tensor's bytes as
/// one long plane, the walk's fastest case (planes, vec4 items): the second floor, one read and
/// one write per element in the crate's best access pattern, with no arithmetic and no channel
/// structure. An operation's ratio to it is what its passes and arithmetic cost over moving
/// its bytes the crate's best way.
pub struct StreamKernel {
    ws: std::cell::RefCell<Workspace>,
}

impl StreamKernel {
    /// A stream kernel for `ctx` (its pipelines compile on first use).
    pub fn new(ctx: &Context) -> Self {
        StreamKernel {
            ws: std::cell::RefCell::new(Workspace::new(ctx)),
        }
    }

    /// Records `y = x` (same element count and dtype).
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, x: &Tensor, y: &Tensor) -> Result<()> {
        if x.numel() != y.numel() || x.dtype() != y.dtype() {
            return Err(Error::ShapeMismatch {
                what: "stream kernel (equal sizes and dtypes)".into(),
                expected: x.shape().to_vec(),
                got: y.shape().to_vec(),
            });
        }
        if x.numel() == 0 {
            return Ok(());
        }
        let s = u32::try_from(x.numel()).map_err(|_| Error::TooLarge {
            what: format!("stream kernel of {} values", x.numel()),
            bytes: x.size_bytes(),
            limit: u64::from(u32::MAX),
        })?;
        let g = Geometry {
            n: 1,
            c: 1,
            s,
            vec4_ok: x.offset().is_multiple_of(16) && y.offset().is_multiple_of(16),
            dtype: x.dtype(),
        };
        let mut ws = self.ws.borrow_mut();
        let prepared = ws.plan(g);
        let op = StreamBindings {
            x: x.slot(),
            y: y.slot(),
        };
        ws.record(encoder, "stream", |rec| op.encode(rec, &prepared));
        Ok(())
    }
}

/// Times recorded GPU work: timestamp queries written around it where the device has
/// `TIMESTAMP_QUERY_INSIDE_ENCODERS`, else the wall clock around submit + wait.
pub struct GpuTimer {
    queries: Option<(wgpu::QuerySet, wgpu::Buffer)>,
    period_ns: f64,
}

impl GpuTimer {
    /// A timer for `ctx`'s device.
    pub fn new(ctx: &Context) -> Self {
        let device = ctx.device();
        let queries = device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
            .then(|| {
                let set = device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("timer"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2,
                });
                let resolve = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timer resolve"),
                    size: 16,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                (set, resolve)
            });
        GpuTimer {
            queries,
            period_ns: f64::from(ctx.queue().get_timestamp_period()),
        }
    }

    /// "GPU timestamps" or "wall clock".
    pub fn method(&self) -> &'static str {
        if self.queries.is_some() {
            "GPU timestamps"
        } else {
            "wall clock around submit + wait"
        }
    }

    /// Records `work`, submits, waits, and returns its duration in milliseconds.
    pub fn time(
        &self,
        ctx: &Context,
        work: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<f64> {
        let device = ctx.device();
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("timed"),
        });
        if let Some((set, _)) = &self.queries {
            encoder.write_timestamp(set, 0);
        }
        work(&mut encoder)?;
        if let Some((set, resolve)) = &self.queries {
            encoder.write_timestamp(set, 1);
            encoder.resolve_query_set(set, 0..2, resolve, 0);
        }
        let start = Instant::now();
        let index = ctx.queue().submit(Some(encoder.finish()));
        block_on(crate::device::submitted(ctx.waits(), ctx.queue(), index))?;
        let wall_ms = start.elapsed().as_secs_f64() * 1e3;
        match &self.queries {
            Some((_, resolve)) => {
                let bytes = block_on(read_bytes(ctx, resolve, 0, 16))?;
                let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
                Ok(ticks[1].wrapping_sub(ticks[0]) as f64 * self.period_ns / 1e6)
            }
            None => Ok(wall_ms),
        }
    }
}

/// The median of `samples` (which it sorts).
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    match samples.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => samples[n / 2],
        n => 0.5 * (samples[n / 2 - 1] + samples[n / 2]),
    }
}
