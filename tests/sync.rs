//! SyncBN: one batch split across two contexts (two devices: lavapipe with subgroup
//! reductions and lavapipe with workgroup-memory ones, or whatever the machine has), partials
//! exchanged through the host, against the whole batch on one device and the f64 reference.

mod support;

use support::checks::{forward_ratio, gradient_ratio};
use support::golden::{per_channel_ratio, rel_l2_ratio, TOL};
use support::Rng;
use wgpu_batchnorm::reference;
use wgpu_batchnorm::reference::ReferenceBatchNorm;
use wgpu_batchnorm::sync::{backward_coefficients, merge_stats, merge_sums, LocalStats};
use wgpu_batchnorm::{
    BackwardArgs, BatchCounter, BatchNormOptions, Context, Error, ForwardArgs, Functional,
    Gradients, RunningStats, SavedStats, Tensor,
};

/// One device's shard and its module state.
struct Device {
    ctx: Context,
    f: Functional,
    x: Tensor,
    dy: Tensor,
    weight: Tensor,
    bias: Tensor,
    rm: Tensor,
    rv: Tensor,
    counter: BatchCounter,
}

#[test]
fn a_batch_split_across_two_devices_matches_the_whole_batch() {
    let (n, c, h, w) = (6usize, 5usize, 3usize, 4usize);
    let shape = [n, c, h, w];
    let per = c * h * w;
    let mut rng = Rng::new(2024);
    let means: Vec<f64> = (0..c).map(|_| rng.range(-3.0, 3.0)).collect();
    let stds: Vec<f64> = (0..c).map(|_| rng.range(0.5, 2.0)).collect();
    let x = rng.channel_data(&shape, &means, &stds);
    let dy = rng.vec_f32(x.len(), -1.0, 1.0);
    let weight = rng.vec_f32(c, 0.5, 1.5);
    let bias = rng.vec_f32(c, -1.0, 1.0);
    let options = BatchNormOptions::default();

    // Shards of 2 and 4 samples, on two contexts.
    let shards = [(0usize, 2usize), (2, 6)];
    let contexts = [support::context(), support::context_without_subgroups()];
    let mut devices: Vec<Device> = shards
        .iter()
        .zip(contexts)
        .map(|(&(a, b), ctx)| {
            let s = [b - a, c, h, w];
            let t = |v: &[f32], s: &[usize]| Tensor::from_slice(&ctx, v, s).unwrap();
            Device {
                f: Functional::new(&ctx),
                x: t(&x[a * per..b * per], &s),
                dy: t(&dy[a * per..b * per], &s),
                weight: t(&weight, &[c]),
                bias: t(&bias, &[c]),
                rm: t(&vec![0.0; c], &[c]),
                rv: t(&vec![1.0; c], &[c]),
                counter: BatchCounter::new(&ctx).unwrap(),
                ctx,
            }
        })
        .collect();

    // 1-2: local statistics, exchanged and merged in device order.
    let locals: Vec<LocalStats> = devices
        .iter_mut()
        .map(|d| d.f.local_stats(&d.x).unwrap())
        .collect();
    let merged = merge_stats(&locals, options.eps).unwrap();
    assert_eq!(merged.count, (n * h * w) as u64);

    // 3: forwards with the merged statistics; 4: local backward sums.
    let mut ys = Vec::new();
    let mut sums = Vec::new();
    let mut uploads = Vec::new();
    for d in &mut devices {
        let up = merged.upload(&d.ctx).unwrap();
        let y = Tensor::empty(&d.ctx, d.x.shape()).unwrap();
        d.f.run(&ForwardArgs {
            weight: Some(&d.weight),
            bias: Some(&d.bias),
            running: Some(RunningStats {
                mean: &d.rm,
                var: &d.rv,
                num_batches_tracked: Some(&d.counter),
            }),
            global_stats: Some(up.global()),
            ..ForwardArgs::new(&d.x, &y)
        })
        .unwrap();
        ys.extend(y.to_host().unwrap());
        let (gw, gb) = (
            Tensor::empty(&d.ctx, &[c]).unwrap(),
            Tensor::empty(&d.ctx, &[c]).unwrap(),
        );
        d.f.run(&BackwardArgs {
            weight: Some(&d.weight),
            stats: SavedStats::Batch {
                save_mean: up.mean(),
                save_invstd: up.invstd(),
            },
            grad_weight: Some(&gw),
            grad_bias: Some(&gb),
            ..BackwardArgs::new(&d.x, &d.dy)
        })
        .unwrap();
        sums.push((gw.to_host().unwrap(), gb.to_host().unwrap()));
        uploads.push(up);
    }
    let (gw, gb) = merge_sums(&sums).unwrap();
    let coef = backward_coefficients(&gw, &gb, merged.count);
    let mut dxs = Vec::new();
    for (d, up) in devices.iter_mut().zip(&uploads) {
        let k = Tensor::from_slice(&d.ctx, &coef, &[2 * c]).unwrap();
        let dx = Tensor::empty(&d.ctx, d.x.shape()).unwrap();
        d.f.run(&BackwardArgs {
            weight: Some(&d.weight),
            stats: SavedStats::Batch {
                save_mean: up.mean(),
                save_invstd: up.invstd(),
            },
            grad_input: Some(&dx),
            global_coefficients: Some(&k),
            ..BackwardArgs::new(&d.x, &d.dy)
        })
        .unwrap();
        dxs.extend(dx.to_host().unwrap());
    }

    // Every device holds the same running statistics and count, bit for bit.
    let running: Vec<(Vec<f32>, Vec<f32>, u64)> = devices
        .iter()
        .map(|d| {
            (
                d.rm.to_host().unwrap(),
                d.rv.to_host().unwrap(),
                d.counter.get().unwrap(),
            )
        })
        .collect();
    assert_eq!(running[0], running[1]);

    // Against the whole batch in f64, under the golden tolerances.
    let ctx = &devices[0].ctx;
    let mut cpu = ReferenceBatchNorm::new(c, options);
    cpu.weight = support::widen(&weight);
    cpu.bias = support::widen(&bias);
    let y64 = cpu.forward(&x, &shape).unwrap();
    let r = forward_ratio(
        "sync",
        &ys,
        &y64,
        Some((running[0].0.clone(), running[0].1.clone())),
        &cpu,
    );
    println!("output and running statistics: worst err/allowed {r:.3e}");
    assert_eq!(running[0].2, 1);
    let grads = Gradients {
        grad_input: Tensor::from_slice(ctx, &dxs, &shape).unwrap(),
        grad_weight: Some(Tensor::from_slice(ctx, &gw, &[c]).unwrap()),
        grad_bias: Some(Tensor::from_slice(ctx, &gb, &[c]).unwrap()),
        grad_residual: None,
    };
    let g = gradient_ratio(ctx, &grads, &cpu, &x, &dy, &shape);
    println!("gradients: worst err/allowed {g:.3e}");

    // Each field alone, for the record (the checks above already bound them all).
    let (mean, var) = cpu.last_stats.clone().unwrap();
    let kappa = reference::kappa(&mean, &var, options.eps);
    let k_c = |ch: usize| 1.0 + kappa[ch] / 30.0;
    let k = (0..c).map(k_c).fold(1.0, f64::max);
    let want = cpu.backward(&x, &shape, &dy).unwrap();
    let fields = [
        ("output", rel_l2_ratio(&ys, &y64, k)),
        (
            "running_mean",
            per_channel_ratio(&running[0].0, &cpu.running_mean, |ch| {
                TOL * (cpu.running_mean[ch].abs() + cpu.running_var[ch].sqrt())
            }),
        ),
        (
            "running_var",
            per_channel_ratio(&running[0].1, &cpu.running_var, |ch| {
                TOL * k_c(ch) * cpu.running_var[ch]
            }),
        ),
        (
            "grad_weight",
            per_channel_ratio(&gw, &want.grad_weight, |ch| {
                TOL * k_c(ch) * want.grad_weight[ch].abs().max(1.0)
            }),
        ),
        (
            "grad_bias",
            per_channel_ratio(&gb, &want.grad_bias, |ch| {
                TOL * want.grad_bias[ch].abs().max(1.0)
            }),
        ),
    ];
    for (field, r) in fields {
        println!("{field}: err/allowed {r:.3e}");
    }
}

/// Bad merges are typed errors with the count or the channel count in the message.
#[test]
fn bad_partials_are_typed_errors() {
    let one = LocalStats {
        count: 1,
        mean: vec![0.5; 3],
        m2: vec![0.0; 3],
    };
    let empty = LocalStats {
        count: 0,
        mean: vec![0.0; 3],
        m2: vec![0.0; 3],
    };
    let other = LocalStats {
        count: 4,
        mean: vec![0.0; 2],
        m2: vec![1.0; 2],
    };
    let err = merge_stats(&[one.clone(), empty], 1e-5).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("1 values")),
        "{err}"
    );
    let err = merge_stats(&[one, other], 1e-5).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("2 channels")),
        "{err}"
    );
    // Global statistics with a count of 1 are refused by the forward too.
    let ctx = support::context();
    let x = Tensor::from_slice(&ctx, &[1.0, 2.0], &[1, 2]).unwrap();
    let y = Tensor::empty(&ctx, &[1, 2]).unwrap();
    let t = Tensor::from_slice(&ctx, &[0.0, 0.0], &[2]).unwrap();
    let err = Functional::new(&ctx)
        .run(&ForwardArgs {
            global_stats: Some(wgpu_batchnorm::GlobalStats {
                mean: &t,
                invstd: &t,
                m2: &t,
                count: 1,
            }),
            ..ForwardArgs::new(&x, &y)
        })
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("over 1 values")),
        "{err}"
    );
}

/// Counts that add up past `u64::MAX` are refused, not wrapped into a small count with a
/// nonsense mean.
#[test]
fn counts_that_overflow_are_typed_errors() {
    let part = |count: u64, mean: f32| LocalStats {
        count,
        mean: vec![mean; 2],
        m2: vec![1.0; 2],
    };
    for parts in [
        vec![part(u64::MAX, 1.0), part(3, 2.0)],
        vec![part(u64::MAX / 2 + 1, 1.0), part(u64::MAX / 2 + 1, 2.0)],
        vec![part(u64::MAX - 1, 1.0), part(1, 2.0), part(1, 3.0)],
    ] {
        let err = merge_stats(&parts, 1e-5).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("u64::MAX")),
            "{err}"
        );
    }
    // Right at the limit the merge still works.
    let merged = merge_stats(&[part(u64::MAX - 1, 1.0), part(1, 1.0)], 1e-5).unwrap();
    assert_eq!(merged.count, u64::MAX);
    assert_eq!(merged.mean, vec![1.0; 2]);
}

/// The local statistics of an f16 tensor on a device without SHADER_F16 (GL, WebGPU without
/// the extension; here a device opened without the feature) take the forward's f32-copy path,
/// and equal those of the same values in f32.
#[test]
fn local_stats_of_f16_work_without_shader_f16() {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: wgpu::Features::empty(),
        ..Default::default()
    }))
    .unwrap();
    let ctx = Context::from_device(device, queue);
    assert!(!ctx.adapter().shader_f16);
    let shape = [3, 4, 5];
    let mut rng = Rng::new(77);
    let values: Vec<f32> = rng
        .vec_f32(60, -3.0, 3.0)
        .into_iter()
        .map(|v| half::f16::from_f32(v).to_f32())
        .collect();
    let mut f = Functional::new(&ctx);
    for format in [
        wgpu_batchnorm::MemoryFormat::Contiguous,
        wgpu_batchnorm::MemoryFormat::ChannelsLast,
    ] {
        let x16 = Tensor::from_f32_as_f16(&ctx, &values, &shape)
            .unwrap()
            .with_memory_format(format);
        let x32 = Tensor::from_slice(&ctx, &values, &shape)
            .unwrap()
            .with_memory_format(format);
        let half = f.local_stats(&x16).unwrap();
        let single = f.local_stats(&x32).unwrap();
        assert_eq!(half, single, "{format:?}");
        assert_eq!(half.count, 15);
    }
}
