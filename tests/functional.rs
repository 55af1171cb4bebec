//! The functional API on caller-owned tensors with no module, one module applied twice in a
//! step, and hostile inputs: tensors from another device, channel counts beyond the device's
//! buffers, NaN inputs, a destroyed device.

mod support;

use support::Rng;
use wgpu_batchnorm::reference::ReferenceBatchNorm;
use wgpu_batchnorm::testing::{Counters, Probes};
use wgpu_batchnorm::{
    BackwardArgs, BatchCounter, BatchNorm1d, BatchNorm2d, BatchNormOptions, Error, ForwardArgs,
    Functional, RunningStats, SavedStats, Tensor,
};

/// |got - want| <= 1e-4 * (1 + |want|) everywhere (unit-scale data, well conditioned).
fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn the_functional_api_alone_runs_forward_and_backward_against_the_reference() {
    let ctx = support::context();
    let mut f = Functional::new(&ctx);
    for (seed, shape) in [&[5usize, 3, 6, 7][..], &[9, 4]].into_iter().enumerate() {
        let c = shape[1];
        let numel: usize = shape.iter().product();
        let mut rng = Rng::new(40 + seed as u64);
        let x = rng.vec_f32(numel, -2.0, 3.0);
        let dy = rng.vec_f32(numel, -1.0, 1.0);
        let w = rng.vec_f32(c, 0.5, 1.5);
        let b = rng.vec_f32(c, -1.0, 1.0);
        let mut cpu = ReferenceBatchNorm::new(c, BatchNormOptions::default());
        cpu.weight = support::widen(&w);
        cpu.bias = support::widen(&b);

        // Caller-owned tensors, one buffer for the per-channel ones (at aligned offsets).
        let xt = Tensor::from_slice(&ctx, &x, shape).unwrap();
        let dyt = Tensor::from_slice(&ctx, &dy, shape).unwrap();
        let y = Tensor::empty(&ctx, shape).unwrap();
        let dx = Tensor::empty(&ctx, shape).unwrap();
        let weight = Tensor::from_slice(&ctx, &w, &[c]).unwrap();
        let bias = Tensor::from_slice(&ctx, &b, &[c]).unwrap();
        let rm = Tensor::from_slice(&ctx, &vec![0.0; c], &[c]).unwrap();
        let rv = Tensor::from_slice(&ctx, &vec![1.0; c], &[c]).unwrap();
        let counter = BatchCounter::new(&ctx).unwrap();
        let (save_mean, save_invstd) = (
            Tensor::empty(&ctx, &[c]).unwrap(),
            Tensor::empty(&ctx, &[c]).unwrap(),
        );
        let (dw, db) = (
            Tensor::empty(&ctx, &[c]).unwrap(),
            Tensor::empty(&ctx, &[c]).unwrap(),
        );
        let running = RunningStats {
            mean: &rm,
            var: &rv,
            num_batches_tracked: Some(&counter),
        };
        // Training forward and backward recorded into one encoder of ours.
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        f.encode(
            &mut encoder,
            &ForwardArgs {
                weight: Some(&weight),
                bias: Some(&bias),
                running: Some(running),
                momentum: None,
                save_mean: Some(&save_mean),
                save_invstd: Some(&save_invstd),
                ..ForwardArgs::new(&xt, &y)
            },
        )
        .unwrap();
        f.encode(
            &mut encoder,
            &BackwardArgs {
                weight: Some(&weight),
                stats: SavedStats::Batch {
                    save_mean: &save_mean,
                    save_invstd: &save_invstd,
                },
                grad_input: Some(&dx),
                grad_weight: Some(&dw),
                grad_bias: Some(&db),
                ..BackwardArgs::new(&xt, &dyt)
            },
        )
        .unwrap();
        ctx.queue().submit(Some(encoder.finish()));

        cpu.options.momentum = None;
        let want_y = cpu.forward(&x, shape).unwrap();
        let want = cpu.backward(&x, shape, &dy).unwrap();
        assert_close("y", &y.to_host().unwrap(), &want_y);
        assert_close("grad_input", &dx.to_host().unwrap(), &want.grad_input);
        assert_close("grad_weight", &dw.to_host().unwrap(), &want.grad_weight);
        assert_close("grad_bias", &db.to_host().unwrap(), &want.grad_bias);
        assert_close("running_mean", &rm.to_host().unwrap(), &cpu.running_mean);
        assert_close("running_var", &rv.to_host().unwrap(), &cpu.running_var);
        assert_eq!(counter.get().unwrap(), 1);
        let (mean, _) = cpu.last_stats.clone().unwrap();
        assert_close("save_mean", &save_mean.to_host().unwrap(), &mean);

        // Eval forward and backward with the running statistics, blocking forms.
        cpu.training = false;
        f.run(&ForwardArgs {
            weight: Some(&weight),
            running: Some(running),
            training: false,
            ..ForwardArgs::new(&xt, &y)
        })
        .unwrap();
        cpu.bias = vec![0.0; c];
        let want_y = cpu.forward(&x, shape).unwrap();
        assert_close("eval y", &y.to_host().unwrap(), &want_y);
        f.run(&BackwardArgs {
            weight: Some(&weight),
            stats: SavedStats::Running {
                running_mean: &rm,
                running_var: &rv,
                eps: 1e-5,
            },
            grad_input: Some(&dx),
            ..BackwardArgs::new(&xt, &dyt)
        })
        .unwrap();
        let want = cpu.backward(&x, shape, &dy).unwrap();
        assert_close("eval grad_input", &dx.to_host().unwrap(), &want.grad_input);
        // Eval without running statistics is PyTorch's RuntimeError, and records nothing.
        let err = f
            .run(&ForwardArgs {
                training: false,
                ..ForwardArgs::new(&xt, &y)
            })
            .unwrap_err();
        assert_eq!(err.torch_kind(), Some("RuntimeError"), "{err}");
    }
}

#[test]
fn one_module_applied_twice_differentiates_both_applications() {
    let ctx = support::context();
    let shape = [4, 3, 5, 5];
    let numel: usize = shape.iter().product();
    let mut rng = Rng::new(7);
    let options = BatchNormOptions::default();
    let mut bn = BatchNorm2d::new(&ctx, 3).unwrap();
    let mut cpu = ReferenceBatchNorm::new(3, options);
    let w = rng.vec_f32(3, 0.5, 1.5);
    bn.set_weight(&w).unwrap();
    cpu.weight = support::widen(&w);
    let inputs: Vec<Vec<f32>> = (0..2).map(|_| rng.vec_f32(numel, -1.0, 2.0)).collect();
    let grads_out: Vec<Vec<f32>> = (0..2).map(|_| rng.vec_f32(numel, -1.0, 1.0)).collect();
    let mut saved = Vec::new();
    let mut want = Vec::new();
    for (x, dy) in inputs.iter().zip(&grads_out) {
        let xt = Tensor::from_slice(&ctx, x, &shape).unwrap();
        let (y, s) = bn.forward_saved(&xt).unwrap();
        let want_y = cpu.forward(x, &shape).unwrap();
        assert_close("y", &y.to_host().unwrap(), &want_y);
        want.push(cpu.backward(x, &shape, dy).unwrap());
        saved.push(s);
    }
    // Both backwards after both forwards, the second application first.
    for i in [1, 0] {
        let dy = Tensor::from_slice(&ctx, &grads_out[i], &shape).unwrap();
        let g = bn.backward_saved(&saved[i], &dy).unwrap();
        assert_close(
            "grad_input",
            &g.grad_input.to_host().unwrap(),
            &want[i].grad_input,
        );
        let gw = g.grad_weight.unwrap().to_host().unwrap();
        assert_close("grad_weight", &gw, &want[i].grad_weight);
    }
    assert_close(
        "running_mean",
        &bn.running_mean().unwrap().unwrap(),
        &cpu.running_mean,
    );
    assert_eq!(bn.num_batches_tracked().unwrap(), Some(2));
    // A handle of another module is refused.
    let mut other = BatchNorm2d::new(&ctx, 3).unwrap();
    let dy = Tensor::from_slice(&ctx, &grads_out[0], &shape).unwrap();
    assert!(matches!(
        other.backward_saved(&saved[0], &dy),
        Err(Error::Backward(_))
    ));
    // Steady state: more applications reuse the released statistics buffers.
    drop(saved);
    let x = Tensor::from_slice(&ctx, &inputs[0], &shape).unwrap();
    bn.forward(&x).unwrap();
    let before = (bn.buffers_created(), ctx.pipelines_created());
    for _ in 0..3 {
        let (_, s1) = bn.forward_saved(&x).unwrap();
        let (_, s2) = bn.forward_saved(&x).unwrap();
        drop((s1, s2));
    }
    assert_eq!((bn.buffers_created(), ctx.pipelines_created()), before);
}

#[test]
fn a_tensor_from_another_device_is_a_typed_error_and_changes_nothing() {
    let ctx = support::context();
    let other = support::context();
    let mut bn = BatchNorm1d::new(&ctx, 3).unwrap();
    let x = Tensor::from_slice(&other, &[1.0; 12], &[4, 3]).unwrap();
    let err = bn.forward(&x).unwrap_err();
    assert!(matches!(err, Error::WrongDevice(_)), "{err}");
    assert_eq!(bn.num_batches_tracked().unwrap(), Some(0));
    assert!(bn.backward(&x).is_err());
    // And in the functional API, for every tensor argument.
    let mut f = Functional::new(&ctx);
    let mine = Tensor::from_slice(&ctx, &[1.0; 12], &[4, 3]).unwrap();
    let y = Tensor::empty(&ctx, &[4, 3]).unwrap();
    let foreign_weight = Tensor::from_slice(&other, &[1.0; 3], &[3]).unwrap();
    let err = f
        .run(&ForwardArgs {
            weight: Some(&foreign_weight),
            ..ForwardArgs::new(&mine, &y)
        })
        .unwrap_err();
    assert!(matches!(err, Error::WrongDevice(_)), "{err}");
    assert!(matches!(mine.to_vec(&other), Err(Error::WrongDevice(_))));
}

#[test]
fn channel_counts_beyond_the_device_are_too_large_not_a_panic() {
    let ctx = support::context();
    let limit = ctx.device().limits().max_storage_buffer_binding_size;
    let c = usize::try_from(limit / 4 + 1)
        .unwrap_or(usize::MAX)
        .min(u32::MAX as usize);
    let err = BatchNorm1d::new(&ctx, c).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let err = BatchNorm1d::new(&ctx, u32::MAX as usize + 1).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
}

#[test]
fn nan_and_inf_poison_only_their_own_channel() {
    let ctx = support::context();
    let mut bn = BatchNorm1d::new(&ctx, 3).unwrap();
    let mut x: Vec<f32> = (0..24).map(|i| i as f32 * 0.25).collect();
    x[3] = f32::NAN; // channel 0 of row 1
    x[4] = f32::INFINITY; // channel 1 of row 1
    let y = bn
        .forward(&Tensor::from_slice(&ctx, &x, &[8, 3]).unwrap())
        .unwrap()
        .to_host()
        .unwrap();
    for row in 0..8 {
        assert!(y[row * 3].is_nan(), "channel 0 row {row}: {}", y[row * 3]);
        assert!(!y[row * 3 + 2].is_nan() && y[row * 3 + 2].is_finite());
    }
    let rm = bn.running_mean().unwrap().unwrap();
    assert!(
        rm[0].is_nan() && !rm[1].is_finite() && rm[2].is_finite(),
        "{rm:?}"
    );
}

#[test]
fn a_destroyed_device_gives_errors_not_panics() {
    let ctx = support::context();
    let mut bn = BatchNorm1d::new(&ctx, 3).unwrap();
    let x = Tensor::from_slice(&ctx, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    bn.forward(&x).unwrap();
    ctx.device().destroy();
    for result in [
        bn.forward(&x).map(|_| ()),
        bn.backward(&x).map(|_| ()),
        x.to_host().map(|_| ()),
        bn.running_mean().map(|_| ()),
        Tensor::from_slice(&ctx, &[1.0; 6], &[2, 3]).map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(!err.to_string().is_empty());
    }
}

/// Parameters written on the GPU are announced with `params_changed`, after which the old
/// forward's backward is refused, as after `set_weight`.
#[test]
fn params_changed_marks_gpu_writes() {
    let ctx = support::context();
    let mut bn = BatchNorm2d::new(&ctx, 2).unwrap();
    let x = Tensor::from_slice(
        &ctx,
        &[1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0],
        &[2, 2, 1, 2],
    )
    .unwrap();
    let dy = Tensor::from_slice(&ctx, &[1.0; 8], &[2, 2, 1, 2]).unwrap();
    let saved = bn.forward_saved(&x).unwrap().1;
    bn.backward_saved(&saved, &dy).unwrap();
    // An "optimizer step" on the GPU: weight *= 2 through the module's own buffer.
    let weight = bn.tensors().weight.unwrap().clone();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    encoder.clear_buffer(weight.buffer(), weight.offset(), Some(weight.size_bytes()));
    ctx.queue().submit(Some(encoder.finish()));
    bn.params_changed();
    assert!(matches!(
        bn.backward_saved(&saved, &dy),
        Err(Error::Backward(_))
    ));
    assert_eq!(bn.weight().unwrap().unwrap(), vec![0.0, 0.0]);
    // A new forward is differentiable again.
    let saved = bn.forward_saved(&x).unwrap().1;
    bn.backward_saved(&saved, &dy).unwrap();
}
