//! Users who own the device: wrapping a device and buffers, recording into their encoder, and
//! the steady state (no new pipelines or bind groups for repeated calls).

mod support;

use support::golden::rel_l2_ratio;
use support::Rng;
use wgpu_batchnorm::reference::{self, ReferenceBatchNorm};
use wgpu_batchnorm::testing::{Counters, Probes};
use wgpu_batchnorm::{BatchNorm2d, BatchNormOptions, Context, Tensor};

fn own_device() -> (wgpu::Device, wgpu::Queue) {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .expect("an adapter");
    pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
        .expect("a device")
}

fn check_against_reference(x: &[f32], shape: &[usize], y: &[f32], cpu: &mut ReferenceBatchNorm) {
    let y64 = cpu.forward(x, shape).unwrap();
    let (mean, var) = cpu.last_stats.clone().unwrap();
    let kappa = reference::kappa(&mean, &var, cpu.options.eps)
        .into_iter()
        .fold(0.0, f64::max);
    let r = rel_l2_ratio(y, &y64, 1.0 + kappa / 30.0);
    assert!(r <= 1.0, "{shape:?}: err/allowed {r}");
}

#[test]
fn a_wrapped_device_with_default_limits_runs_forward() {
    let (device, queue) = own_device();
    let ctx = Context::from_device(device, queue);
    let mut rng = Rng::new(7);
    let shape = [4, 3, 5, 6];
    let x = rng.vec_f32(4 * 3 * 30, -2.0, 2.0);
    let mut bn = BatchNorm2d::new(&ctx, 3).unwrap();
    let y = bn
        .forward(&Tensor::from_slice(&ctx, &x, &shape).unwrap())
        .unwrap();
    let mut cpu = ReferenceBatchNorm::new(3, BatchNormOptions::default());
    check_against_reference(&x, &shape, &y.to_vec(&ctx).unwrap(), &mut cpu);
}

#[test]
fn forwards_recorded_into_one_user_encoder_keep_their_own_shapes() {
    let ctx = support::context();
    let device = ctx.device().clone();
    let mut rng = Rng::new(11);
    // Two shapes, two tensors each at an offset inside one user buffer.
    let shapes = [[2usize, 3, 4, 4], [5, 3, 3, 7]];
    let align = u64::from(device.limits().min_storage_buffer_offset_alignment);
    let mut offsets = Vec::new();
    let mut end = align; // leave the first slot unused: offsets are never 0
    for shape in &shapes {
        let bytes = shape.iter().product::<usize>() as u64 * 4;
        offsets.push(end);
        end = (end + bytes).div_ceil(align) * align;
    }
    let big = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("user buffer"),
        size: end,
        usage: wgpu_batchnorm::TENSOR_USAGE,
        mapped_at_creation: false,
    });
    let mut inputs = Vec::new();
    for (shape, &offset) in shapes.iter().zip(&offsets) {
        let data = rng.vec_f32(shape.iter().product(), -3.0, 3.0);
        ctx.queue()
            .write_buffer(&big, offset, bytemuck::cast_slice(&data));
        inputs.push((
            Tensor::from_buffer(&ctx, &big, offset, shape).unwrap(),
            data,
        ));
    }
    let mut bn = BatchNorm2d::new(&ctx, 3).unwrap();
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    let outputs: Vec<Tensor> = shapes
        .iter()
        .map(|s| Tensor::empty(&ctx, s).unwrap())
        .collect();
    for ((x, _), y) in inputs.iter().zip(&outputs) {
        bn.encode_forward(&mut encoder, x, y).unwrap();
    }
    // Nothing ran yet: the caller submits.
    assert_eq!(bn.num_batches_tracked().unwrap(), Some(0));
    ctx.queue().submit(Some(encoder.finish()));
    let mut cpu = ReferenceBatchNorm::new(3, BatchNormOptions::default());
    for (((x, data), y), shape) in inputs.iter().zip(&outputs).zip(&shapes) {
        assert_eq!(x.to_vec(&ctx).unwrap(), *data);
        check_against_reference(data, shape, &y.to_vec(&ctx).unwrap(), &mut cpu);
    }
    assert_eq!(bn.num_batches_tracked().unwrap(), Some(2));
    let rm = bn.running_mean().unwrap().unwrap();
    for (g, c) in rm.iter().zip(&cpu.running_mean) {
        assert!(
            (f64::from(*g) - c).abs() <= 1e-5 * (c.abs() + 1.0),
            "{rm:?} vs {:?}",
            cpu.running_mean
        );
    }
}

#[test]
fn repeated_forwards_create_no_new_pipelines_or_bind_groups() {
    let ctx = support::context();
    let mut bn = BatchNorm2d::new(&ctx, 4).unwrap();
    let x = Tensor::from_slice(&ctx, &vec![0.5; 2 * 4 * 9], &[2, 4, 3, 3]).unwrap();
    let y = Tensor::empty(&ctx, &[2, 4, 3, 3]).unwrap();
    bn.forward_with(&x).output(&y).run().map(drop).unwrap();
    bn.eval();
    bn.forward_with(&x).output(&y).run().map(drop).unwrap();
    bn.train();
    let pipelines = ctx.pipelines_created();
    let bindings = bn.cached_bind_groups();
    let buffers = bn.buffers_created();
    assert!(buffers > 0 && bindings > 0);
    for i in 0..10 {
        bn.set_training(i % 2 == 0);
        bn.forward_with(&x).output(&y).run().map(drop).unwrap();
    }
    assert_eq!(ctx.pipelines_created(), pipelines);
    assert_eq!(bn.cached_bind_groups(), bindings);
    assert_eq!(bn.buffers_created(), buffers);
}

#[test]
fn uploads_and_readbacks_round_trip_through_chunked_staging() {
    let ctx = support::context();
    // Several 8 MiB staging chunks plus a ragged tail, then a small transfer after a large one.
    for len in [5 * (1 << 20) + 3, 1000, 1] {
        let mut rng = Rng::new(len as u64);
        let data = rng.vec_f32(len, -1e3, 1e3);
        let t = Tensor::from_slice(&ctx, &data, &[1, 1, len]).unwrap();
        assert_eq!(t.to_vec(&ctx).unwrap(), data);
        let other = rng.vec_f32(len, -1.0, 1.0);
        t.write(&ctx, &other).unwrap();
        let mut back = vec![0.0; len];
        t.read_into(&ctx, &mut back).unwrap();
        assert_eq!(back, other);
    }
}

#[test]
fn an_f16_buffer_of_the_caller_takes_the_f16_path() {
    use wgpu::util::DeviceExt;
    use wgpu_batchnorm::{half::f16, DType, Error};
    let ctx = support::context();
    let shape = [3, 2, 5];
    let mut rng = Rng::new(16);
    let halves: Vec<f16> = rng
        .vec_f32(30, -2.0, 2.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let buffer = ctx
        .device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("a framework's f16 tensor"),
            contents: bytemuck::cast_slice(
                &halves.iter().map(|h| h.to_bits()).collect::<Vec<u16>>(),
            ),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
    let wrapped = Tensor::from_buffer_of(&ctx, &buffer, 0, &shape, DType::F16).unwrap();
    assert_eq!(wrapped.dtype(), DType::F16);
    let uploaded = Tensor::from_f16(&ctx, &halves, &shape).unwrap();
    let mut a = wgpu_batchnorm::BatchNorm1d::new(&ctx, 2).unwrap();
    let mut b = wgpu_batchnorm::BatchNorm1d::new(&ctx, 2).unwrap();
    let ya = a.forward(&wrapped).unwrap();
    let yb = b.forward(&uploaded).unwrap();
    assert_eq!(ya.dtype(), DType::F16);
    assert_eq!(ya.to_host_f16().unwrap(), yb.to_host_f16().unwrap());
    // Odd f16 counts need the rest of their last word inside the buffer.
    let exact = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 6,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    assert!(matches!(
        Tensor::from_buffer_of(&ctx, &exact, 0, &[1, 3], DType::F16),
        Err(Error::InvalidBuffer(_))
    ));
}

#[test]
fn a_counter_in_a_callers_buffer_drives_the_cumulative_average() {
    use wgpu_batchnorm::functional::{ForwardArgs, RunningStats};
    use wgpu_batchnorm::{BatchCounter, Error, Functional};
    let ctx = support::context();
    let align = u64::from(ctx.device().limits().min_storage_buffer_offset_alignment);
    // A framework's buffer with the count's two words one alignment step in.
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("a framework's integer tensor"),
        size: align + 8,
        usage: wgpu_batchnorm::TENSOR_USAGE,
        mapped_at_creation: false,
    });
    let counter = BatchCounter::from_buffer(&ctx, &buffer, align).unwrap();
    counter.set(3).unwrap();
    let shape = [4, 2, 3];
    let mut rng = Rng::new(21);
    let x_host = rng.vec_f32(24, -2.0, 2.0);
    let x = Tensor::from_slice(&ctx, &x_host, &shape).unwrap();
    let y = Tensor::empty(&ctx, &shape).unwrap();
    let mean = Tensor::from_slice(&ctx, &[1.0, -1.0], &[2]).unwrap();
    let var = Tensor::from_slice(&ctx, &[2.0, 0.5], &[2]).unwrap();
    let args = ForwardArgs {
        running: Some(RunningStats {
            mean: &mean,
            var: &var,
            num_batches_tracked: Some(&counter),
        }),
        momentum: None,
        ..ForwardArgs::new(&x, &y)
    };
    Functional::new(&ctx).run(&args).unwrap();
    assert_eq!(counter.get().unwrap(), 4);
    // The 4th batch enters the cumulative average with factor 1/4.
    let mut cpu = ReferenceBatchNorm::new(
        2,
        BatchNormOptions {
            momentum: None,
            ..BatchNormOptions::default()
        },
    );
    cpu.running_mean = vec![1.0, -1.0];
    cpu.running_var = vec![2.0, 0.5];
    cpu.num_batches_tracked = 3;
    cpu.forward(&x_host, &shape).unwrap();
    let got = mean.to_vec(&ctx).unwrap();
    for (g, w) in got.iter().zip(&cpu.running_mean) {
        assert!(
            (f64::from(*g) - w).abs() < 1e-6,
            "{got:?} vs {:?}",
            cpu.running_mean
        );
    }
    // The words must lie inside the buffer, at an aligned offset.
    assert!(matches!(
        BatchCounter::from_buffer(&ctx, &buffer, align + 4),
        Err(Error::InvalidBuffer(_))
    ));
    assert!(matches!(
        BatchCounter::from_buffer(&ctx, &buffer, 2 * align),
        Err(Error::InvalidBuffer(_))
    ));
}

/// A framework's pool: input and output as two ranges of one `wgpu::Buffer`. wgpu refuses a
/// buffer bound read-only and read-write in one dispatch, so this needs
/// `ContextOptions::read_write_bindings`; with it the results are the reference's.
#[test]
fn read_write_bindings_let_input_and_output_share_one_buffer() {
    use wgpu_batchnorm::ContextOptions;
    let (device, queue) = own_device();
    let shared = Context::from_device_with_options(
        device.clone(),
        queue.clone(),
        &ContextOptions {
            read_write_bindings: true,
            ..ContextOptions::default()
        },
    );
    let plain = Context::from_device(device, queue);
    let shape = [5, 3, 7, 9];
    let n: usize = shape.iter().product();
    let align = u64::from(shared.device().limits().min_storage_buffer_offset_alignment);
    let bytes = (n as u64 * 4).div_ceil(align) * align;
    let mut rng = Rng::new(33);
    let x_host = rng.vec_f32(n, -3.0, 3.0);
    for (ctx, works) in [(&shared, true), (&plain, false)] {
        let pool = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("a framework's memory pool"),
            size: 2 * bytes,
            usage: wgpu_batchnorm::TENSOR_USAGE,
            mapped_at_creation: false,
        });
        ctx.queue()
            .write_buffer(&pool, 0, bytemuck::cast_slice(&x_host));
        let x = Tensor::from_buffer(ctx, &pool, 0, &shape).unwrap();
        let y = Tensor::from_buffer(ctx, &pool, bytes, &shape).unwrap();
        let mut bn = BatchNorm2d::new(ctx, 3).unwrap();
        let result = bn.forward_with(&x).output(&y).run();
        if works {
            result.unwrap();
            let mut cpu = ReferenceBatchNorm::new(3, BatchNormOptions::default());
            check_against_reference(&x_host, &shape, &y.to_vec(ctx).unwrap(), &mut cpu);
        } else {
            assert!(
                result.is_err(),
                "wgpu accepted one buffer bound read-only and read-write"
            );
        }
    }
}
