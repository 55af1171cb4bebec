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
    let bad = |o: SgdOptions| matches!(Sgd::new(&ctx, o), Err(Error::InvalidArgument(_)));
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
