//! The GPU SGD step against PyTorch's arithmetic on the host.

mod support;

use support::Rng;
use wgpu_batchnorm::optim::{Sgd, SgdOptions};
use wgpu_batchnorm::reference::sgd_step;
use wgpu_batchnorm::{BatchNorm1d, BatchNormOptions, Error, Gradients, Tensor};

#[test]
fn sgd_steps_match_torch_optim_sgd_arithmetic() {
    let ctx = support::context();
    let c = 300; // more channels than the step's workgroup has invocations
    let options = [
        SgdOptions {
            lr: 0.1,
            ..Default::default()
        },
        SgdOptions {
            lr: 0.05,
            momentum: 0.9,
            dampening: 0.1,
            weight_decay: 0.01,
            nesterov: false,
        },
        SgdOptions {
            lr: 0.02,
            momentum: 0.5,
            weight_decay: 0.1,
            nesterov: true,
            ..Default::default()
        },
    ];
    for (k, o) in options.into_iter().enumerate() {
        let mut rng = Rng::new(9 + k as u64);
        let mut bn = BatchNorm1d::new(&ctx, c).unwrap();
        let w0 = rng.vec_f32(c, 0.5, 1.5);
        let b0 = rng.vec_f32(c, -1.0, 1.0);
        bn.set_weight(&w0).unwrap();
        bn.set_bias(&b0).unwrap();
        let mut sgd = Sgd::new(&ctx, o).unwrap();
        let mut host: Vec<(f64, Option<f64>)> = w0
            .iter()
            .chain(&b0)
            .map(|&v| (f64::from(v), None))
            .collect();
        let hyper = (o.lr, o.momentum, o.dampening, o.weight_decay, o.nesterov);
        for _ in 0..6 {
            let gw = rng.vec_f32(c, -2.0, 2.0);
            let gb = rng.vec_f32(c, -2.0, 2.0);
            let grads = Gradients {
                grad_input: Tensor::empty(&ctx, &[1, c]).unwrap(),
                grad_weight: Some(Tensor::from_slice(&ctx, &gw, &[c]).unwrap()),
                grad_bias: Some(Tensor::from_slice(&ctx, &gb, &[c]).unwrap()),
                grad_residual: None,
            };
            sgd.step(&mut bn, &grads).unwrap();
            for (p, &g) in host.iter_mut().zip(gw.iter().chain(&gb)) {
                p.0 = sgd_step(p.0, f64::from(g), &mut p.1, hyper);
            }
        }
        assert_eq!(sgd.steps(), 6);
        let got: Vec<f32> = bn
            .weight()
            .unwrap()
            .unwrap()
            .into_iter()
            .chain(bn.bias().unwrap().unwrap())
            .collect();
        for (i, (&g, h)) in got.iter().zip(&host).enumerate() {
            assert!(
                (f64::from(g) - h.0).abs() <= 1e-5 * (1.0 + h.0.abs()),
                "options {k} value {i}: {g} vs {}",
                h.0
            );
        }
    }
}

#[test]
fn sgd_misuse_is_a_typed_error() {
    let ctx = support::context();
    // torch.optim.SGD raises ValueError, with these messages.
    let bad = |o: SgdOptions| match Sgd::new(&ctx, o) {
        Err(e @ Error::InvalidValue(_)) => {
            assert_eq!(e.torch_kind(), Some("ValueError"), "{e}");
            let m = e.to_string();
            assert!(
                m.starts_with("Invalid ") || m.starts_with("Nesterov momentum requires"),
                "{m}"
            );
            true
        }
        _ => false,
    };
    assert!(bad(SgdOptions {
        lr: -1.0,
        ..Default::default()
    }));
    assert!(bad(SgdOptions {
        lr: f64::NAN,
        ..Default::default()
    }));
    assert!(bad(SgdOptions {
        momentum: -0.1,
        ..Default::default()
    }));
    assert!(bad(SgdOptions {
        weight_decay: -0.01,
        ..Default::default()
    }));
    assert!(bad(SgdOptions {
        nesterov: true,
        ..Default::default()
    }));
    assert!(bad(SgdOptions {
        nesterov: true,
        momentum: 0.9,
        dampening: 0.1,
        ..Default::default()
    }));
    // A module without affine parameters; gradients without parameter gradients.
    let mut plain = BatchNorm1d::with_options(
        &ctx,
        2,
        BatchNormOptions {
            affine: false,
            ..Default::default()
        },
    )
    .unwrap();
    let x = Tensor::from_slice(&ctx, &[1.0, 2.0, 3.0, 5.0], &[2, 2]).unwrap();
    plain.forward(&x).unwrap();
    let grads = plain.backward(&x).unwrap();
    let mut sgd = Sgd::new(&ctx, SgdOptions::default()).unwrap();
    assert!(matches!(
        sgd.step(&mut plain, &grads),
        Err(Error::NotAvailable(_))
    ));
    // After a step, the older forward's backward is refused (the parameters changed).
    let mut bn = BatchNorm1d::new(&ctx, 2).unwrap();
    let saved = bn.forward_saved(&x).unwrap().1;
    let grads = bn.backward_saved(&saved, &x).unwrap();
    sgd.step(&mut bn, &grads).unwrap();
    assert!(matches!(
        bn.backward_saved(&saved, &x),
        Err(Error::Backward(_))
    ));
}

/// Momentum with dampening: the first step's rule (no dampening) shows in the result.
const DAMPED: SgdOptions = SgdOptions {
    lr: 0.1,
    momentum: 0.9,
    dampening: 0.5,
    weight_decay: 0.0,
    nesterov: false,
};

/// Gradients for a step, from host values.
fn grads_of(ctx: &wgpu_batchnorm::Context, gw: &[f32], gb: &[f32]) -> Gradients {
    Gradients {
        grad_input: Tensor::empty(ctx, &[1, gw.len()]).unwrap(),
        grad_weight: Some(Tensor::from_slice(ctx, gw, &[gw.len()]).unwrap()),
        grad_bias: Some(Tensor::from_slice(ctx, gb, &[gb.len()]).unwrap()),
        grad_residual: None,
    }
}

/// f16 gradients are refused with a typed error (parameters and their gradients are f32);
/// they used to be read as if their bytes were f32.
#[test]
fn f16_gradients_are_refused() {
    let ctx = support::context();
    let mut bn = BatchNorm1d::new(&ctx, 4).unwrap();
    let mut sgd = Sgd::new(
        &ctx,
        SgdOptions {
            lr: 0.1,
            ..Default::default()
        },
    )
    .unwrap();
    let half = Tensor::from_f32_as_f16(&ctx, &[0.5; 4], &[4]).unwrap();
    let mut grads = grads_of(&ctx, &[0.5; 4], &[0.5; 4]);
    grads.grad_weight = Some(half);
    let err = sgd.step(&mut bn, &grads).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");
    assert_eq!(
        bn.weight().unwrap().unwrap(),
        vec![1.0; 4],
        "nothing was stepped"
    );
    assert_eq!(sgd.steps(), 0);
}

/// One optimizer stepping two modules of the same shape keeps a momentum buffer per module,
/// as torch.optim.SGD keeps one per parameter: each module moves as if it had its own.
#[test]
fn one_optimizer_keeps_momentum_per_module() {
    let ctx = support::context();
    let o = DAMPED;
    let c = 3;
    let mut shared = Sgd::new(&ctx, o).unwrap();
    let (mut a, mut b) = (
        BatchNorm1d::new(&ctx, c).unwrap(),
        BatchNorm1d::new(&ctx, c).unwrap(),
    );
    let (mut a_alone, mut b_alone) = (
        BatchNorm1d::new(&ctx, c).unwrap(),
        BatchNorm1d::new(&ctx, c).unwrap(),
    );
    let (mut sgd_a, mut sgd_b) = (Sgd::new(&ctx, o).unwrap(), Sgd::new(&ctx, o).unwrap());
    let mut rng = Rng::new(5);
    for _ in 0..4 {
        let ga = grads_of(&ctx, &rng.vec_f32(c, -1.0, 1.0), &rng.vec_f32(c, -1.0, 1.0));
        let gb = grads_of(&ctx, &rng.vec_f32(c, -3.0, 3.0), &rng.vec_f32(c, -3.0, 3.0));
        shared.step(&mut a, &ga).unwrap();
        shared.step(&mut b, &gb).unwrap();
        sgd_a.step(&mut a_alone, &ga).unwrap();
        sgd_b.step(&mut b_alone, &gb).unwrap();
    }
    for (what, m, alone) in [("a", &a, &a_alone), ("b", &b, &b_alone)] {
        assert_eq!(m.weight().unwrap(), alone.weight().unwrap(), "{what}");
        assert_eq!(m.bias().unwrap(), alone.bias().unwrap(), "{what}");
    }
    assert_ne!(a.weight().unwrap(), b.weight().unwrap());
}

/// A step recorded with the encode-only call and dropped unsubmitted changes nothing: the next
/// real step is still the first (momentum buffer = d, no dampening), as on a fresh optimizer.
#[test]
fn a_dropped_encoded_step_does_not_count() {
    let ctx = support::context();
    let o = DAMPED;
    let c = 4;
    let g1 = [0.5, -1.0, 2.0, 0.25];
    let g2 = [1.0, 1.0, -1.0, 0.0];
    let mut dropped = BatchNorm1d::new(&ctx, c).unwrap();
    let mut sgd = Sgd::new(&ctx, o).unwrap();
    {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        sgd.encode_step(&mut encoder, &mut dropped, &grads_of(&ctx, &g1, &g1))
            .unwrap();
        // Dropped, never submitted.
    }
    let mut fresh = BatchNorm1d::new(&ctx, c).unwrap();
    let mut sgd_fresh = Sgd::new(&ctx, o).unwrap();
    for g in [&g2, &g1, &g2] {
        sgd.step(&mut dropped, &grads_of(&ctx, g, g)).unwrap();
        sgd_fresh.step(&mut fresh, &grads_of(&ctx, g, g)).unwrap();
    }
    assert_eq!(dropped.weight().unwrap(), fresh.weight().unwrap());
    assert_eq!(dropped.bias().unwrap(), fresh.bias().unwrap());
    // And against the host arithmetic: the first real step starts the buffer undamped.
    let hyper = (o.lr, o.momentum, o.dampening, o.weight_decay, o.nesterov);
    let want: Vec<f32> = (0..c)
        .map(|i| {
            let (mut p, mut buf) = (1.0f64, None);
            for g in [&g2, &g1, &g2] {
                p = sgd_step(p, f64::from(g[i]), &mut buf, hyper);
            }
            p as f32
        })
        .collect();
    for (got, want) in dropped.weight().unwrap().unwrap().iter().zip(&want) {
        assert!((got - want).abs() <= 1e-6, "{got} vs {want}");
    }
}
