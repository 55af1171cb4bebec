//! The operations on Burn's wgpu runtime: this crate's kernels read Burn's buffers in place and
//! write buffers Burn allocated, on the queue Burn submits to.
//!
//! Order on the shared queue: `get_resource` records the work Burn has pending on a handle
//! into cubecl's encoder, `flush` submits it, and only then is this call's command buffer
//! submitted, so it sees everything Burn queued before it and everything Burn queues after
//! sees its results. The resources are held until the submission.

use burn::backend::TensorMetadata;
use burn::backend::ops::FloatTensorOps;
use burn::tensor::DType;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, kernel::into_contiguous};
use cubecl::wgpu::{AutoCompiler, WgpuServer};
use wgpu_batchnorm::functional::{BackwardArgs, ForwardArgs, RunningStats, SavedStats};
use wgpu_batchnorm::{BatchCounter, MemoryFormat, Tensor, wgpu};

use crate::device::lookup;
use crate::ops::{
    BackwardOutput, BackwardSpec, BatchNormOps, ForwardOutput, ForwardSpec, Maybe, Operands, Stats,
};

type Server = WgpuServer<AutoCompiler>;

/// Every failure here is a broken invariant: the module validated the call before it was
/// queued, and Burn's own ops panic on such failures too.
fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    panic!("wgpu-batchnorm-burn: {what}: {e}")
}

/// Channels-last when Burn's strides say so: the channel axis has stride 1 and the others
/// follow in (N, *spatial) order.
fn is_channels_last(t: &CubeTensor) -> bool {
    let shape = t.meta.shape();
    let strides = t.meta.strides();
    let rank = shape.len();
    if rank < 3 {
        return false;
    }
    let mut expected = 1;
    if strides[1] != 1 && shape[1] != 1 {
        return false;
    }
    expected *= shape[1];
    for axis in (2..rank).rev().chain(std::iter::once(0)) {
        if shape[axis] != 1 && strides[axis] != expected {
            return false;
        }
        expected *= shape[axis];
    }
    true
}

/// One call: the device's context and the Burn resources it binds, held until submitted.
struct Call {
    shared: std::sync::Arc<std::sync::Mutex<crate::device::Shared>>,
    ctx: wgpu_batchnorm::Context,
    client: cubecl::client::Client,
    device: burn_cubecl::CubeDevice,
    /// cubecl's claims on the bound buffers (`ManagedResource`s), released after submission.
    held: Vec<Box<dyn Send>>,
}

impl Call {
    fn new(like: &CubeTensor) -> Self {
        let burn_cubecl::CubeDevice::Wgpu(device) = &like.device else {
            fail("device", format!("{:?} is not a wgpu device", like.device))
        };
        let shared = lookup(device).unwrap_or_else(|e| fail("device", e));
        let ctx = shared.lock().unwrap_or_else(|e| e.into_inner()).ctx.clone();
        Call {
            shared,
            ctx,
            client: like.client.clone(),
            device: like.device.clone(),
            held: Vec::new(),
        }
    }

    /// An elementwise tensor in a layout the kernels read: contiguous or channels-last as it
    /// is; any other strides are made contiguous by Burn first.
    fn layout(&self, t: CubeTensor) -> (CubeTensor, MemoryFormat) {
        if t.is_contiguous() {
            (t, MemoryFormat::Contiguous)
        } else if is_channels_last(&t) {
            (t, MemoryFormat::ChannelsLast)
        } else {
            (into_contiguous(t), MemoryFormat::Contiguous)
        }
    }

    /// A new Burn tensor with `like`'s shape, strides and dtype.
    fn empty_like(&self, like: &CubeTensor) -> CubeTensor {
        let bytes = like.meta.shape().num_elements() * like.dtype.size();
        let handle = self.client.empty(bytes.max(4));
        CubeTensor::new(
            self.client.clone(),
            handle,
            (*like.meta).clone(),
            self.device.clone(),
            like.dtype,
        )
    }

    /// A new contiguous Burn tensor of `shape` and `dtype`.
    fn empty(&self, shape: &[usize], dtype: DType) -> CubeTensor {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        let handle = self.client.empty(bytes.max(4));
        CubeTensor::new_contiguous(
            self.client.clone(),
            self.device.clone(),
            shape.into(),
            handle,
            dtype,
        )
    }

    fn resource(&mut self, t: &CubeTensor) -> (wgpu::Buffer, u64) {
        let res = self
            .client
            .get_resource::<Server>(t.handle.clone())
            .unwrap_or_else(|e| fail("Burn's buffer", e));
        let out = (res.resource().buffer.clone(), res.resource().offset);
        self.held.push(Box::new(res));
        out
    }

    /// This crate's view of a Burn tensor's buffer, without a copy.
    fn bind(&mut self, t: &CubeTensor, format: MemoryFormat) -> Tensor {
        let (buffer, offset) = self.resource(t);
        let dtype = match t.dtype {
            DType::F32 => wgpu_batchnorm::DType::F32,
            DType::F16 => wgpu_batchnorm::DType::F16,
            other => fail("dtype", format!("{other:?} reached the kernels")),
        };
        let shape: Vec<usize> = t.meta.shape().iter().copied().collect();
        Tensor::from_buffer_of(&self.ctx, &buffer, offset, &shape, dtype)
            .unwrap_or_else(|e| fail("Burn's buffer", e))
            .with_memory_format(format)
    }

    fn bind_maybe(&mut self, t: &Maybe<CubeBackend>) -> Option<Tensor> {
        match t {
            Maybe::Some(t) => Some(self.bind(t, MemoryFormat::Contiguous)),
            Maybe::None => None,
        }
    }

    /// Submits Burn's pending work, then `record`'s, on the shared queue.
    fn submit(
        mut self,
        record: impl FnOnce(&mut wgpu_batchnorm::Functional, &mut wgpu::CommandEncoder),
    ) {
        self.client
            .flush()
            .unwrap_or_else(|e| fail("flushing Burn's queue", e));
        let mut encoder =
            self.ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("wgpu-batchnorm-burn"),
                });
        {
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            record(&mut shared.functional, &mut encoder);
        }
        self.ctx.queue().submit([encoder.finish()]);
        self.held.clear();
    }
}

/// An elementwise tensor beside the input (residual, gradient) in the input's layout: the
/// kernels read them all in one memory order.
fn same_layout(call: &Call, t: CubeTensor, format: MemoryFormat) -> CubeTensor {
    let (t, f) = call.layout(t);
    match (f, format) {
        (f, format) if f == format => t,
        (_, MemoryFormat::Contiguous) => into_contiguous(t),
        // Channels-last input, other strides here: Burn reorders this one to match.
        _ => {
            let rank = t.meta.shape().len();
            let to_memory: Vec<usize> = std::iter::once(0).chain(2..rank).chain([1]).collect();
            let to_logical: Vec<usize> = [0, rank - 1].into_iter().chain(1..rank - 1).collect();
            let t = into_contiguous(CubeBackend::float_permute(t, &to_memory));
            CubeBackend::float_permute(t, &to_logical)
        }
    }
}

/// `t` to be written: itself where nothing else references its buffer, else a copy.
fn owned(t: CubeTensor) -> CubeTensor {
    if t.can_mut() { t } else { t.copy() }
}

impl BatchNormOps for CubeBackend {
    fn bn_forward(
        input: CubeTensor,
        operands: Operands<Self>,
        spec: ForwardSpec,
    ) -> ForwardOutput<Self> {
        let mut call = Call::new(&input);
        let (input, format) = call.layout(input);
        let residual = match operands.residual {
            Maybe::Some(r) => Some(same_layout(&call, r, format)),
            Maybe::None => None,
        };
        let c = input.shape()[1];
        let output = call.empty_like(&input);

        let x = call.bind(&input, format);
        let y = call.bind(&output, format);
        let res = residual.as_ref().map(|r| call.bind(r, format));
        let weight = call.bind_maybe(&operands.weight);
        let bias = call.bind_maybe(&operands.bias);

        let batch = spec.training || matches!(operands.stats, Stats::None);
        let (saved, saved_views) = if batch {
            let mean = call.empty(&[c], DType::F32);
            let invstd = call.empty(&[c], DType::F32);
            let views = (
                call.bind(&mean, MemoryFormat::Contiguous),
                call.bind(&invstd, MemoryFormat::Contiguous),
            );
            (Stats::Batch { mean, invstd }, Some(views))
        } else {
            (Stats::None, None)
        };

        // Eval reads the running buffers as they are. Training updates them in place where
        // this call holds the only reference (with fusion, the module has already replaced
        // them by the time the op runs), else copies made by Burn's copy kernel in Burn's
        // stream: Burn's tensors are values, and a copy within one of cubecl's pooled buffers
        // cannot be a buffer-to-buffer copy.
        let (running_out, running_views, counter) = match operands.stats {
            Stats::None | Stats::Batch { .. } => (Stats::None, None, None),
            Stats::Running { mean, var } | Stats::Counted { mean, var, .. } if !spec.training => {
                let views = (
                    call.bind(&mean, MemoryFormat::Contiguous),
                    call.bind(&var, MemoryFormat::Contiguous),
                );
                (Stats::None, Some(views), None)
            }
            Stats::Running { mean, var } => {
                let (mean, var) = (owned(mean), owned(var));
                let views = (
                    call.bind(&mean, MemoryFormat::Contiguous),
                    call.bind(&var, MemoryFormat::Contiguous),
                );
                (Stats::Running { mean, var }, Some(views), None)
            }
            Stats::Counted { mean, var, count } => {
                let (mean, var, count) = (owned(mean), owned(var), owned(count));
                let views = (
                    call.bind(&mean, MemoryFormat::Contiguous),
                    call.bind(&var, MemoryFormat::Contiguous),
                );
                let (buffer, offset) = call.resource(&count);
                let counter = BatchCounter::from_buffer(&call.ctx, &buffer, offset)
                    .unwrap_or_else(|e| fail("num_batches_tracked", e));
                (
                    Stats::Counted { mean, var, count },
                    Some(views),
                    Some(counter),
                )
            }
        };

        call.submit(|functional, encoder| {
            let running = running_views.as_ref().map(|(mean, var)| RunningStats {
                mean,
                var,
                num_batches_tracked: counter.as_ref(),
            });
            let args = ForwardArgs {
                weight: weight.as_ref(),
                bias: bias.as_ref(),
                running,
                // Eval without running buffers normalizes with batch statistics, as PyTorch.
                training: batch,
                momentum: spec.momentum,
                eps: spec.eps,
                save_mean: saved_views.as_ref().map(|v| &v.0),
                save_invstd: saved_views.as_ref().map(|v| &v.1),
                activation: spec.activation,
                residual: res.as_ref(),
                ..ForwardArgs::new(&x, &y)
            };
            functional
                .encode(encoder, &args)
                .unwrap_or_else(|e| fail("forward", e));
        });

        ForwardOutput {
            output,
            saved,
            running: running_out,
        }
    }

    fn bn_backward(
        input: CubeTensor,
        grad_output: CubeTensor,
        operands: Operands<Self>,
        spec: BackwardSpec,
    ) -> BackwardOutput<Self> {
        let mut call = Call::new(&input);
        let (input, format) = call.layout(input);
        let grad_output = same_layout(&call, grad_output, format);
        let residual = match operands.residual {
            Maybe::Some(r) => Some(same_layout(&call, r, format)),
            Maybe::None => None,
        };
        let c = input.shape()[1];

        let x = call.bind(&input, format);
        let dy = call.bind(&grad_output, format);
        let res = residual.as_ref().map(|r| call.bind(r, format));
        let weight = call.bind_maybe(&operands.weight);
        let bias = call.bind_maybe(&operands.bias);
        let stats = match &operands.stats {
            Stats::Batch { mean, invstd } => (
                call.bind(mean, MemoryFormat::Contiguous),
                call.bind(invstd, MemoryFormat::Contiguous),
                true,
            ),
            Stats::Running { mean, var } | Stats::Counted { mean, var, .. } => (
                call.bind(mean, MemoryFormat::Contiguous),
                call.bind(var, MemoryFormat::Contiguous),
                false,
            ),
            Stats::None => fail("backward", "no statistics to differentiate through"),
        };

        let out = |yes: bool, like: Option<&CubeTensor>, call: &mut Call| {
            if !yes {
                return (Maybe::None, None);
            }
            let t = match like {
                Some(like) => call.empty_like(like),
                None => call.empty(&[c], DType::F32),
            };
            let view = call.bind(
                &t,
                if like.is_some() {
                    format
                } else {
                    MemoryFormat::Contiguous
                },
            );
            (Maybe::Some(t), Some(view))
        };
        let (grad_input, gi) = out(spec.grad_input, Some(&input), &mut call);
        let (grad_weight, gw) = out(spec.grad_params, None, &mut call);
        let (grad_bias, gb) = out(spec.grad_params, None, &mut call);
        let (grad_residual, gr) = out(spec.grad_residual, Some(&input), &mut call);

        call.submit(|functional, encoder| {
            let saved = if stats.2 {
                SavedStats::Batch {
                    save_mean: &stats.0,
                    save_invstd: &stats.1,
                }
            } else {
                SavedStats::Running {
                    running_mean: &stats.0,
                    running_var: &stats.1,
                    eps: spec.eps,
                }
            };
            let args = BackwardArgs {
                weight: weight.as_ref(),
                stats: saved,
                grad_input: gi.as_ref(),
                grad_weight: gw.as_ref(),
                grad_bias: gb.as_ref(),
                activation: spec.activation,
                bias: bias.as_ref(),
                residual: res.as_ref(),
                grad_residual: gr.as_ref(),
                ..BackwardArgs::new(&x, &dy)
            };
            functional
                .encode(encoder, &args)
                .unwrap_or_else(|e| fail("backward", e));
        });

        BackwardOutput {
            grad_input,
            grad_weight,
            grad_bias,
            grad_residual,
        }
    }
}
