//! Backward against the f64 reference (golden README tolerances), against central finite
//! differences of the GPU forward, and its misuse errors.

mod support;

use support::checks::{flavor_for, gradient_ratio, module_pair, set_running};
use support::Rng;
use wgpu_batchnorm::reference::ReferenceBatchNorm;
use wgpu_batchnorm::testing::{Counters, Probes};
use wgpu_batchnorm::{
    BackwardArgs, BatchNorm, BatchNorm2d, BatchNormOptions, Context, Error, Functional, SavedStats,
    Tensor,
};

/// Runs the GPU backward for `dy` and compares it with the reference's.
fn backward_ratio(
    ctx: &Context,
    gpu: &mut BatchNorm,
    cpu: &ReferenceBatchNorm,
    x: &[f32],
    dy: &[f32],
    shape: &[usize],
) -> f64 {
    let grads = gpu
        .backward(&Tensor::from_slice(ctx, dy, shape).unwrap())
        .unwrap();
    gradient_ratio(ctx, &grads, cpu, x, dy, shape)
}

/// A GPU module and a reference with the same random parameters and running statistics.
fn random_pair(
    ctx: &Context,
    shape: &[usize],
    options: BatchNormOptions,
    rng: &mut Rng,
) -> (BatchNorm, ReferenceBatchNorm) {
    let (mut gpu, mut cpu) = module_pair(ctx, shape, options, rng);
    if options.track_running_stats {
        let c = shape[1];
        let rm = rng.vec_f32(c, -1.0, 1.0);
        let rv = rng.vec_f32(c, 0.5, 2.0);
        set_running(&mut gpu, &mut cpu, &rm, &rv);
    }
    (gpu, cpu)
}

fn forward_both(
    ctx: &Context,
    gpu: &mut BatchNorm,
    cpu: &mut ReferenceBatchNorm,
    x: &[f32],
    shape: &[usize],
) {
    gpu.forward(&Tensor::from_slice(ctx, x, shape).unwrap())
        .unwrap();
    cpu.forward(x, shape).unwrap();
}

/// grad_output with a per-channel offset, so that sum(dy) != 0.
fn grad_output(rng: &mut Rng, shape: &[usize]) -> Vec<f32> {
    let c = shape[1];
    let offsets: Vec<f64> = (0..c).map(|_| rng.range(-0.5, 0.5)).collect();
    let ones = vec![1.0; c];
    rng.channel_data(shape, &offsets, &ones)
}

#[test]
fn random_shapes_match_the_reference_in_every_mode() {
    let shapes: &[&[usize]] = &[
        &[2, 3],          // two values per channel
        &[16, 10],        // (N, C)
        &[4, 6, 9],       // (N, C, L)
        &[1, 6, 4, 7],    // N = 1 with spatial > 1
        &[3, 7, 5, 11],   // odd sizes, scalar path
        &[4, 5, 8, 8],    // vec4 path
        &[2, 4, 3, 5, 6], // 3d
        &[8, 3, 64, 33],  // several workgroups per channel
        &[3, 4099],       // many channels
    ];
    let variants = [
        BatchNormOptions::default(),
        BatchNormOptions {
            affine: false,
            ..Default::default()
        },
        BatchNormOptions {
            track_running_stats: false,
            ..Default::default()
        },
        BatchNormOptions {
            eps: 1e-3,
            momentum: None,
            ..Default::default()
        },
    ];
    for (label, ctx) in support::contexts() {
        let mut worst: f64 = 0.0;
        for (i, shape) in shapes.iter().enumerate() {
            for (j, options) in variants.iter().enumerate() {
                let mut rng = Rng::new(1000 + 10 * i as u64 + j as u64);
                let (mut gpu, mut cpu) = random_pair(&ctx, shape, *options, &mut rng);
                let c = shape[1];
                let means: Vec<f64> = (0..c).map(|_| rng.range(-1.5, 1.5)).collect();
                let stds: Vec<f64> = (0..c).map(|_| rng.range(0.5, 2.0)).collect();
                for training in [true, false] {
                    gpu.set_training(training);
                    cpu.training = training;
                    let x = rng.channel_data(shape, &means, &stds);
                    forward_both(&ctx, &mut gpu, &mut cpu, &x, shape);
                    let dy = grad_output(&mut rng, shape);
                    worst = worst.max(backward_ratio(&ctx, &mut gpu, &cpu, &x, &dy, shape));
                }
            }
        }
        println!("[{label}] worst backward err/allowed {worst:.3e}");
    }
}

#[test]
fn a_constant_channel_has_a_large_but_finite_gradient() {
    for (label, ctx) in support::contexts() {
        let shape = [4, 3, 6, 5];
        let mut rng = Rng::new(77);
        let (mut gpu, mut cpu) = random_pair(&ctx, &shape, BatchNormOptions::default(), &mut rng);
        let mut x = rng.channel_data(&shape, &[0.0, 1.0, -1.0], &[1.0, 1.0, 1.0]);
        for b in 0..4 {
            for v in &mut x[(b * 3 + 1) * 30..(b * 3 + 2) * 30] {
                *v = 0.1;
            }
        }
        forward_both(&ctx, &mut gpu, &mut cpu, &x, &shape);
        let dy = grad_output(&mut rng, &shape);
        let r = backward_ratio(&ctx, &mut gpu, &cpu, &x, &dy, &shape);
        let gx = gpu
            .backward(&Tensor::from_slice(&ctx, &dy, &shape).unwrap())
            .unwrap()
            .grad_input
            .to_vec(&ctx)
            .unwrap();
        assert!(gx.iter().all(|v| v.is_finite()));
        let big = gx[30..60].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            big > 10.0,
            "[{label}] the constant channel's gradient should be ~1/sqrt(eps)"
        );
        println!("[{label}] constant channel: err/allowed {r:.3e}, max |gx| {big}");
    }
}

/// Loss L = sum(r * y) in f64 from one GPU forward.
fn loss(ctx: &Context, bn: &mut BatchNorm, x: &[f32], shape: &[usize], r: &[f32]) -> f64 {
    let y = bn
        .forward(&Tensor::from_slice(ctx, x, shape).unwrap())
        .unwrap()
        .to_vec(ctx)
        .unwrap();
    y.iter()
        .zip(r)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum()
}

fn l2(v: &[f64]) -> f64 {
    v.iter().map(|a| a * a).sum::<f64>().sqrt()
}

fn l2_diff(a: &[f64], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, &y)| (x - f64::from(y)).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn gradients_match_central_finite_differences_of_the_gpu_forward() {
    // Independent of the reference: d/dx, d/dweight, d/dbias of L = sum(r * y) by central
    // differences (h = 1e-2, differences taken in f64) against the GPU backward with dy = r.
    let ctx = support::context();
    let cases: &[(&[usize], bool)] = &[
        (&[2, 3, 2, 2], true),
        (&[5, 2], true),
        (&[1, 2, 7], true),
        (&[3, 2, 2, 2], false),
    ];
    let h = 1e-2f32;
    for (i, &(shape, training)) in cases.iter().enumerate() {
        let mut rng = Rng::new(900 + i as u64);
        let c = shape[1];
        let mut bn = BatchNorm::new(
            &ctx,
            flavor_for(shape.len()),
            c,
            BatchNormOptions::default(),
        )
        .unwrap();
        let w = rng.vec_f32(c, 0.5, 1.5);
        let b = rng.vec_f32(c, -0.5, 0.5);
        bn.set_weight(&w).unwrap();
        bn.set_bias(&b).unwrap();
        bn.set_running_mean(&rng.vec_f32(c, -0.5, 0.5)).unwrap();
        bn.set_running_var(&rng.vec_f32(c, 0.5, 1.5)).unwrap();
        bn.set_training(training);
        let numel: usize = shape.iter().product();
        let x = rng.vec_f32(numel, -2.0, 2.0);
        let r = rng.vec_f32(numel, -1.0, 1.0);

        let mut fd_x = vec![0.0; numel];
        for j in 0..numel {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[j] += h;
            xm[j] -= h;
            let d = f64::from(xp[j]) - f64::from(xm[j]);
            fd_x[j] =
                (loss(&ctx, &mut bn, &xp, shape, &r) - loss(&ctx, &mut bn, &xm, shape, &r)) / d;
        }
        let mut fd_w = vec![0.0; c];
        let mut fd_b = vec![0.0; c];
        for ch in 0..c {
            for (param, fd) in [(&w, &mut fd_w), (&b, &mut fd_b)] {
                let is_weight = std::ptr::eq(param, &w);
                let (mut pp, mut pm) = (param.clone(), param.clone());
                pp[ch] += h;
                pm[ch] -= h;
                let set = |bn: &mut BatchNorm, v: &[f32]| {
                    if is_weight {
                        bn.set_weight(v)
                    } else {
                        bn.set_bias(v)
                    }
                    .unwrap()
                };
                set(&mut bn, &pp);
                let lp = loss(&ctx, &mut bn, &x, shape, &r);
                set(&mut bn, &pm);
                let lm = loss(&ctx, &mut bn, &x, shape, &r);
                set(&mut bn, param);
                fd[ch] = (lp - lm) / (f64::from(pp[ch]) - f64::from(pm[ch]));
            }
        }

        loss(&ctx, &mut bn, &x, shape, &r);
        let grads = bn
            .backward(&Tensor::from_slice(&ctx, &r, shape).unwrap())
            .unwrap();
        let gx = grads.grad_input.to_vec(&ctx).unwrap();
        let gw = grads.grad_weight.unwrap().to_vec(&ctx).unwrap();
        let gb = grads.grad_bias.unwrap().to_vec(&ctx).unwrap();
        for (what, fd, got) in [
            ("x", &fd_x, &gx),
            ("weight", &fd_w, &gw),
            ("bias", &fd_b, &gb),
        ] {
            let rel = l2_diff(fd, got) / l2(fd).max(1e-6);
            println!(
                "{shape:?} training={training}: d/d{what} finite-difference rel. error {rel:.2e}"
            );
            assert!(rel < 5e-3, "{shape:?} d/d{what}: FD {fd:?} vs GPU {got:?}");
        }
    }
}

#[test]
fn misuse_of_backward_is_a_typed_error() {
    let ctx = support::context();
    let shape = [2, 3, 2, 2];
    let x = Tensor::from_slice(
        &ctx,
        &(0..24).map(|i| i as f32 * 0.1).collect::<Vec<_>>(),
        &shape,
    )
    .unwrap();
    let dy = Tensor::from_slice(&ctx, &[1.0; 24], &shape).unwrap();
    let mut bn = BatchNorm2d::new(&ctx, 3).unwrap();
    assert!(
        matches!(bn.backward(&dy), Err(Error::Backward(_))),
        "backward before forward"
    );
    bn.forward(&x).unwrap();
    let wrong = Tensor::from_slice(&ctx, &[1.0; 18], &[2, 3, 3, 1]).unwrap();
    assert!(matches!(
        bn.backward(&wrong),
        Err(Error::ShapeMismatch { .. })
    ));
    bn.eval();
    assert!(
        matches!(bn.backward(&dy), Err(Error::Backward(_))),
        "mode switched"
    );
    bn.train();
    bn.backward(&dy).unwrap();
    bn.set_weight(&[2.0; 3]).unwrap();
    assert!(
        matches!(bn.backward(&dy), Err(Error::Backward(_))),
        "weight changed"
    );
    bn.forward(&x).unwrap();
    bn.backward(&dy).unwrap();
    // Outputs that alias inputs.
    assert!(matches!(
        bn.backward_with(&dy)
            .outputs(wgpu_batchnorm::GradOutputs {
                grad_input: Some(&dy),
                grad_weight: None,
                grad_bias: None,
                grad_residual: None
            })
            .run(),
        Err(Error::Aliasing)
    ));
    // Parameter gradients of a module without parameters.
    let plain_options = BatchNormOptions {
        affine: false,
        ..Default::default()
    };
    let mut plain = BatchNorm2d::with_options(&ctx, 3, plain_options).unwrap();
    plain.forward(&x).unwrap();
    let gx = Tensor::empty(&ctx, &shape).unwrap();
    let gw = Tensor::empty(&ctx, &[3]).unwrap();
    assert!(matches!(
        plain
            .backward_with(&dy)
            .outputs(wgpu_batchnorm::GradOutputs {
                grad_input: Some(&gx),
                grad_weight: Some(&gw),
                grad_bias: None,
                grad_residual: None
            })
            .run(),
        Err(Error::NotAvailable(_))
    ));
    let grads = plain.backward(&dy).unwrap();
    assert!(grads.grad_weight.is_none() && grads.grad_bias.is_none());
}

#[test]
fn the_functional_form_and_the_encoder_path_match_the_module() {
    let ctx = support::context();
    let shape = [4, 3, 5, 4];
    let mut rng = Rng::new(5);
    let x = rng.vec_f32(240, -2.0, 2.0);
    let dy = rng.vec_f32(240, -1.0, 1.0);
    let xt = Tensor::from_slice(&ctx, &x, &shape).unwrap();
    let dyt = Tensor::from_slice(&ctx, &dy, &shape).unwrap();
    let mut bn = BatchNorm2d::new(&ctx, 3).unwrap();
    bn.set_weight(&[0.5, -1.0, 2.0]).unwrap();
    let mut functional = Functional::new(&ctx);
    for training in [true, false] {
        bn.set_training(training);
        bn.forward(&xt).unwrap();
        let module = bn.backward(&dyt).unwrap();
        let want = module.grad_input.to_vec(&ctx).unwrap();
        // Encode-only through the module.
        let gx = Tensor::empty(&ctx, &shape).unwrap();
        let gb = Tensor::empty(&ctx, &[3]).unwrap();
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        bn.encode_backward(&mut encoder, &dyt, &gx, None, Some(&gb))
            .unwrap();
        ctx.queue().submit(Some(encoder.finish()));
        assert_eq!(gx.to_vec(&ctx).unwrap(), want);
        assert_eq!(
            gb.to_vec(&ctx).unwrap(),
            module.grad_bias.as_ref().unwrap().to_vec(&ctx).unwrap()
        );
        // The functional form with the module's tensors.
        let t = bn.tensors();
        let stats = if training {
            SavedStats::Batch {
                save_mean: t.save_mean.unwrap(),
                save_invstd: t.save_invstd.unwrap(),
            }
        } else {
            SavedStats::Running {
                running_mean: t.running_mean.unwrap(),
                running_var: t.running_var.unwrap(),
                eps: bn.eps(),
            }
        };
        let gx2 = Tensor::empty(&ctx, &shape).unwrap();
        let gw2 = Tensor::empty(&ctx, &[3]).unwrap();
        functional
            .run(&BackwardArgs {
                x: &xt,
                grad_output: &dyt,
                weight: t.weight,
                stats,
                grad_input: Some(&gx2),
                grad_weight: Some(&gw2),
                ..BackwardArgs::new(&xt, &dyt)
            })
            .unwrap();
        assert_eq!(gx2.to_vec(&ctx).unwrap(), want);
        assert_eq!(
            gw2.to_vec(&ctx).unwrap(),
            module.grad_weight.as_ref().unwrap().to_vec(&ctx).unwrap()
        );
    }
}

#[test]
fn repeated_backward_creates_no_new_pipelines_or_bind_groups() {
    let ctx = support::context();
    let shape = [2, 4, 3, 3];
    let x = Tensor::from_slice(&ctx, &vec![0.25; 72], &shape).unwrap();
    let dy = Tensor::from_slice(&ctx, &vec![1.0; 72], &shape).unwrap();
    let gx = Tensor::empty(&ctx, &shape).unwrap();
    let y = Tensor::empty(&ctx, &shape).unwrap();
    let mut bn = BatchNorm2d::new(&ctx, 4).unwrap();
    let step = |bn: &mut BatchNorm, training: bool| {
        bn.set_training(training);
        bn.forward_with(&x).output(&y).run().map(drop).unwrap();
        bn.backward_with(&dy)
            .outputs(wgpu_batchnorm::GradOutputs {
                grad_input: Some(&gx),
                ..Default::default()
            })
            .run()
            .unwrap();
    };
    for training in [true, false] {
        step(&mut bn, training);
    }
    let pipelines = ctx.pipelines_created();
    let groups = bn.cached_bind_groups();
    let buffers = bn.buffers_created();
    assert!(buffers > 0 && groups > 0);
    for i in 0..6 {
        step(&mut bn, i % 2 == 0);
    }
    assert_eq!(ctx.pipelines_created(), pipelines);
    assert_eq!(bn.cached_bind_groups(), groups);
    assert_eq!(bn.buffers_created(), buffers);
}
