//! Invalid input gets a typed error and changes no state; empty batches behave like PyTorch.

mod support;

use wgpu_batchnorm::{
    Activation, BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormOptions, Context,
    ContextOptions, DType, Error, ForwardArgs, Functional, GradOutputs, MemoryFormat, Tensor,
};

type State = (Option<Vec<f32>>, Option<Vec<f32>>, Option<u64>);

fn state(bn: &BatchNorm) -> State {
    (
        bn.running_mean().unwrap(),
        bn.running_var().unwrap(),
        bn.num_batches_tracked().unwrap(),
    )
}

/// A module whose buffers are not at their initial values, so "unchanged" means something.
fn trained_module(ctx: &Context, options: BatchNormOptions) -> BatchNorm {
    let mut bn: BatchNorm = BatchNorm2d::with_options(ctx, 3, options).unwrap();
    let x: Vec<f32> = (0..2 * 3 * 4)
        .map(|i| (i as f32 * 0.37).sin() * 3.0)
        .collect();
    bn.forward(&Tensor::from_slice(ctx, &x, &[2, 3, 2, 2]).unwrap())
        .unwrap();
    bn
}

fn input(ctx: &Context, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
    Tensor::from_slice(ctx, &data, shape).unwrap()
}

#[track_caller]
fn assert_rejected(bn: &mut BatchNorm, x: &Tensor, kind: &str, check: impl Fn(&Error) -> bool) {
    let before = state(bn);
    let err = bn.forward(x).expect_err("invalid input was accepted");
    assert!(check(&err), "unexpected error: {err:?}");
    assert_eq!(err.torch_kind(), Some(kind), "{err}");
    assert!(!err.to_string().is_empty());
    assert_eq!(
        state(bn),
        before,
        "state changed by a rejected forward: {err}"
    );
}

#[test]
fn invalid_input_is_a_typed_error_and_changes_nothing() {
    let ctx = support::context();
    let mut bn = trained_module(&ctx, BatchNormOptions::default());
    assert_eq!(bn.num_batches_tracked().unwrap(), Some(1));

    // Wrong rank.
    assert_rejected(&mut bn, &input(&ctx, &[2, 3, 4]), "ValueError", |e| {
        matches!(e, Error::InvalidRank { got: 3, .. })
    });
    // Wrong channel count, in training and in eval.
    assert_rejected(&mut bn, &input(&ctx, &[2, 4, 2, 2]), "RuntimeError", |e| {
        matches!(
            e,
            Error::ChannelMismatch {
                what: "running_mean",
                input_channels: 4,
                num_features: 3
            }
        )
    });
    bn.eval();
    assert_rejected(&mut bn, &input(&ctx, &[2, 4, 2, 2]), "RuntimeError", |e| {
        matches!(e, Error::ChannelMismatch { .. })
    });
    // One value per channel is fine in eval with tracked buffers...
    bn.forward(&input(&ctx, &[1, 3, 1, 1])).unwrap();
    // ...but not in training.
    bn.train();
    assert_rejected(&mut bn, &input(&ctx, &[1, 3, 1, 1]), "ValueError", |e| {
        matches!(e, Error::TooFewValuesPerChannel { .. })
    });
    // eps must be positive in training and non-negative in eval.
    bn.set_eps(0.0);
    assert_rejected(&mut bn, &input(&ctx, &[2, 3, 2, 2]), "ValueError", |e| {
        matches!(
            e,
            Error::InvalidEps {
                batch_stats: true,
                ..
            }
        )
    });
    bn.eval();
    bn.forward(&input(&ctx, &[2, 3, 2, 2])).unwrap();
    bn.set_eps(-1e-5);
    assert_rejected(&mut bn, &input(&ctx, &[2, 3, 2, 2]), "ValueError", |e| {
        matches!(
            e,
            Error::InvalidEps {
                batch_stats: false,
                ..
            }
        )
    });
    bn.set_eps(f64::NAN);
    assert_rejected(&mut bn, &input(&ctx, &[2, 3, 2, 2]), "ValueError", |e| {
        matches!(e, Error::InvalidEps { .. })
    });
}

#[test]
fn ranks_follow_each_flavor() {
    let ctx = support::context();
    let mut one = BatchNorm1d::new(&ctx, 3).unwrap();
    one.forward(&input(&ctx, &[4, 3])).unwrap();
    one.forward(&input(&ctx, &[4, 3, 5])).unwrap();
    assert!(matches!(
        one.forward(&input(&ctx, &[4, 3, 5, 5])),
        Err(Error::InvalidRank { .. })
    ));
    assert!(matches!(
        one.forward(&input(&ctx, &[3])),
        Err(Error::InvalidRank { got: 1, .. })
    ));
    let mut three = BatchNorm3d::new(&ctx, 3).unwrap();
    three.forward(&input(&ctx, &[2, 3, 2, 2, 2])).unwrap();
    let err = three.forward(&input(&ctx, &[2, 3, 2, 2])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "BatchNorm3d: expected 5D input (got 4D input)"
    );
}

#[test]
fn batch_statistics_without_buffers_need_two_values_even_in_eval() {
    let ctx = support::context();
    let options = BatchNormOptions {
        track_running_stats: false,
        ..Default::default()
    };
    let mut bn = BatchNorm1d::with_options(&ctx, 3, options).unwrap();
    bn.eval();
    let err = bn.forward(&input(&ctx, &[1, 3])).unwrap_err();
    assert!(matches!(err, Error::TooFewValuesPerChannel { .. }), "{err}");
    // Wrong channels without buffers: torch names the weight.
    let err = bn.forward(&input(&ctx, &[2, 4])).unwrap_err();
    assert!(
        matches!(err, Error::ChannelMismatch { what: "weight", .. }),
        "{err}"
    );
    assert_eq!(bn.running_mean().unwrap(), None);
    assert_eq!(bn.num_batches_tracked().unwrap(), None);
}

#[test]
fn empty_batches_count_but_change_no_statistics() {
    let ctx = support::context();
    for momentum in [Some(0.1), None] {
        let options = BatchNormOptions {
            momentum,
            ..Default::default()
        };
        let mut bn = trained_module(&ctx, options);
        let (rm, rv, nbt) = state(&bn);
        let y = bn.forward(&input(&ctx, &[0, 3, 5, 5])).unwrap();
        assert_eq!(y.shape(), &[0, 3, 5, 5]);
        assert!(y.to_vec(&ctx).unwrap().is_empty());
        assert_eq!(state(&bn), (rm.clone(), rv.clone(), nbt.map(|n| n + 1)));
        // The gradients of an empty batch: empty grad_input, parameter gradients overwritten
        // with zeros (sums over nothing).
        let gb = Tensor::from_slice(&ctx, &[1.0; 3], &[3]).unwrap();
        let empty = input(&ctx, &[0, 3, 5, 5]);
        let gx = Tensor::empty(&ctx, &[0, 3, 5, 5]).unwrap();
        bn.backward_with(&empty)
            .outputs(wgpu_batchnorm::GradOutputs {
                grad_input: Some(&gx),
                grad_weight: None,
                grad_bias: Some(&gb),
                grad_residual: None,
            })
            .run()
            .unwrap();
        assert_eq!(gb.to_vec(&ctx).unwrap(), vec![0.0; 3]);
        // Eval on an empty batch changes nothing.
        bn.eval();
        bn.forward(&input(&ctx, &[0, 3, 5, 5])).unwrap();
        assert_eq!(state(&bn), (rm, rv, nbt.map(|n| n + 1)));
        // PyTorch returns before checking channels when the input is empty.
        bn.forward(&input(&ctx, &[0, 4, 5, 5])).unwrap();
        // An empty spatial extent is an empty input too.
        bn.train();
        bn.forward(&input(&ctx, &[2, 3, 0, 5])).unwrap();
    }
}

#[test]
fn misuse_of_tensors_and_parameters_is_a_typed_error() {
    let ctx = support::context();
    let mut bn = BatchNorm2d::new(&ctx, 3).unwrap();
    let x = input(&ctx, &[2, 3, 2, 2]);
    // Output of another shape, or the input itself.
    let y = Tensor::empty(&ctx, &[2, 3, 2, 3]).unwrap();
    assert!(matches!(
        bn.forward_with(&x).output(&y).run().map(drop),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        bn.forward_with(&x).output(&x).run().map(drop),
        Err(Error::Aliasing)
    ));
    assert_eq!(bn.num_batches_tracked().unwrap(), Some(0));
    // Host data of the wrong length.
    assert!(matches!(
        Tensor::from_slice(&ctx, &[1.0, 2.0], &[3]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        bn.set_weight(&[1.0; 4]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        bn.set_running_var(&[1.0; 2]),
        Err(Error::ShapeMismatch { .. })
    ));
    // Parameters that do not exist.
    let options = BatchNormOptions {
        affine: false,
        track_running_stats: false,
        ..Default::default()
    };
    let mut plain = BatchNorm2d::with_options(&ctx, 3, options).unwrap();
    assert!(matches!(
        plain.set_weight(&[1.0; 3]),
        Err(Error::NotAvailable(_))
    ));
    assert!(matches!(
        plain.set_running_mean(&[1.0; 3]),
        Err(Error::NotAvailable(_))
    ));
    assert_eq!(plain.weight().unwrap(), None);
    // Wrapped buffers that are too small, misaligned or not storage buffers.
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 1024,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    assert!(matches!(
        Tensor::from_buffer(&ctx, &buffer, 0, &[2, 3, 100]),
        Err(Error::InvalidBuffer(_))
    ));
    assert!(matches!(
        Tensor::from_buffer(&ctx, &buffer, 4, &[2, 3]),
        Err(Error::InvalidBuffer(_))
    ));
    let uniform = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::UNIFORM,
        mapped_at_creation: false,
    });
    assert!(matches!(
        Tensor::from_buffer(&ctx, &uniform, 0, &[2, 3]),
        Err(Error::InvalidBuffer(_))
    ));
}

#[test]
fn an_unknown_adapter_name_is_an_error_not_a_panic() {
    let options = ContextOptions {
        adapter_name: Some("no adapter is called this".into()),
        ..ContextOptions::from_env()
    };
    match Context::with_options(options) {
        Err(Error::AdapterNotFound { name, .. }) => assert_eq!(name, "no adapter is called this"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("an adapter matched a made-up name"),
    }
}

#[test]
fn tensors_larger_than_the_adapter_allows_are_rejected() {
    let ctx = support::context();
    let limit = ctx.device().limits().max_buffer_size;
    let elements = (limit / 4 + 1) as usize;
    match Tensor::empty(&ctx, &[1, 1, elements]) {
        Err(Error::TooLarge {
            bytes, limit: l, ..
        }) => {
            assert!(bytes > l);
            assert_eq!(l, limit);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn a_module_without_channels_accepts_empty_inputs() {
    let ctx = support::context();
    let mut bn = BatchNorm1d::new(&ctx, 0).unwrap();
    let y = bn.forward(&input(&ctx, &[4, 0])).unwrap();
    assert_eq!(y.shape(), &[4, 0]);
    assert_eq!(bn.num_batches_tracked().unwrap(), Some(1));
    assert_eq!(bn.running_mean().unwrap(), Some(vec![]));
    let grads = bn.backward(&input(&ctx, &[4, 0])).unwrap();
    assert!(grads.grad_input.to_vec(&ctx).unwrap().is_empty());
    assert_eq!(
        grads.grad_weight.unwrap().to_vec(&ctx).unwrap(),
        Vec::<f32>::new()
    );
}

/// Memory formats, residuals and activations that do not fit together are typed errors, and
/// change nothing.
#[test]
fn mismatched_layouts_residuals_and_activations_are_typed_errors() {
    let ctx = support::context();
    let mut bn = trained_module(&ctx, BatchNormOptions::default());
    let shape = [2, 3, 2, 2];
    let x = input(&ctx, &shape);
    let x_cl = input(&ctx, &shape).with_memory_format(MemoryFormat::ChannelsLast);
    let before = state(&bn);

    // A residual of another shape, or stored in another memory order.
    let err = bn
        .forward_residual(&x, &input(&ctx, &[2, 3, 4]))
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let err = bn.forward_residual(&x, &x_cl).unwrap_err();
    assert!(
        matches!(
            err,
            Error::MemoryFormatMismatch {
                expected: MemoryFormat::Contiguous,
                got: MemoryFormat::ChannelsLast,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.torch_kind(), Some("RuntimeError"));
    assert_eq!(state(&bn), before, "a refused forward changed the module");

    // An output in another memory order than the input.
    let y = Tensor::empty(&ctx, &shape).unwrap();
    let err = bn
        .forward_with(&x_cl)
        .output(&y)
        .run()
        .map(drop)
        .unwrap_err();
    assert!(matches!(err, Error::MemoryFormatMismatch { .. }), "{err}");
    assert_eq!(state(&bn), before);

    // A residual that is also the output.
    let mut f = Functional::new(&ctx);
    let err = f
        .run(&ForwardArgs {
            residual: Some(&y),
            ..ForwardArgs::new(&x, &y)
        })
        .unwrap_err();
    assert_eq!(err, Error::Aliasing);

    // A slope that is not a number.
    bn.set_activation(Activation::LeakyRelu(f32::NAN));
    let err = bn.forward(&x).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert_eq!(state(&bn), before);
    bn.set_activation(Activation::Relu);

    // grad_output in another memory order than the forward's input.
    bn.forward(&x).unwrap();
    let err = bn.backward(&x_cl).unwrap_err();
    assert!(matches!(err, Error::MemoryFormatMismatch { .. }), "{err}");
    // grad_residual of a forward that had no residual.
    let saved = bn.forward_saved(&x).unwrap().1;
    let gr = Tensor::empty(&ctx, &shape).unwrap();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let err = bn
        .backward_with(&x)
        .saved(&saved)
        .outputs(GradOutputs {
            grad_residual: Some(&gr),
            ..Default::default()
        })
        .encode(&mut encoder)
        .unwrap_err();
    assert!(matches!(err, Error::Backward(_)), "{err}");

    // The eval fold needs running statistics; the conv fold checks its lengths.
    let mut untracked = BatchNorm2d::with_options(
        &ctx,
        3,
        BatchNormOptions {
            track_running_stats: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(untracked.eval_fold(), Err(Error::NotAvailable(_))));
    let fold = wgpu_batchnorm::fold::fuse_conv_bn_weights;
    assert!(matches!(
        fold(&[1.0; 6], None, &[1.0; 2], &[0.0; 3]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        fold(&[1.0; 5], None, &[1.0; 2], &[0.0; 2]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        fold(&[1.0; 6], Some(&[0.0; 3]), &[1.0; 2], &[0.0; 2]),
        Err(Error::ShapeMismatch { .. })
    ));
}

/// f16 activations take f16 partners and f32 parameters; anything else is a typed error that
/// changes nothing.
#[test]
fn mixed_dtypes_are_typed_errors() {
    let ctx = support::context();
    let mut bn = trained_module(&ctx, BatchNormOptions::default());
    let shape = [2, 3, 2, 2];
    let numel: usize = shape.iter().product();
    let x16 = Tensor::from_f32_as_f16(&ctx, &vec![0.5; numel], &shape).unwrap();
    let x32 = input(&ctx, &shape);
    let before = state(&bn);

    // An f32 residual for an f16 input, an f32 output for it.
    let err = bn.forward_residual(&x16, &x32).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DTypeMismatch {
                expected: DType::F16,
                got: DType::F32,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.torch_kind(), Some("RuntimeError"));
    let err = bn
        .forward_with(&x16)
        .output(&x32)
        .run()
        .map(drop)
        .unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");
    assert_eq!(state(&bn), before, "a refused forward changed the module");

    // f16 per-channel tensors in the functional API.
    let mut f = Functional::new(&ctx);
    let w16 = Tensor::from_f32_as_f16(&ctx, &[1.0; 3], &[3]).unwrap();
    let y16 = Tensor::empty_of(&ctx, &shape, DType::F16, MemoryFormat::Contiguous).unwrap();
    let err = f
        .run(&ForwardArgs {
            weight: Some(&w16),
            ..ForwardArgs::new(&x16, &y16)
        })
        .unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");

    // An f32 grad_output for an f16 forward; f32 host calls on f16 tensors.
    bn.forward(&x16).unwrap();
    let err = bn.backward(&x32).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");
    assert!(matches!(
        x16.write(&ctx, &vec![0.0; numel]),
        Err(Error::DTypeMismatch { .. })
    ));
    assert!(matches!(
        x32.to_host_f16(),
        Err(Error::DTypeMismatch { .. })
    ));
    // ... while the f16 ones work, and f16 values come back exactly.
    let y = bn.forward(&x16).unwrap();
    assert_eq!(y.dtype(), DType::F16);
    let grads = bn.backward(&x16).unwrap();
    assert_eq!(grads.grad_input.dtype(), DType::F16);
    assert_eq!(grads.grad_weight.unwrap().dtype(), DType::F32);
    let bits: Vec<u16> = (0..numel as u16).map(|i| 0x3c00 + i).collect();
    let t = Tensor::from_f16_bits(&ctx, &bits, &shape).unwrap();
    let back: Vec<u16> = t
        .to_host_f16()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(back, bits);
}

/// Everything a caller can observe of a module after a forward: buffers, `save_mean`,
/// `save_invstd`, and the gradients `backward` gives for `dy`.
fn observed(bn: &mut BatchNorm, dy: &Tensor) -> (State, Vec<f32>, Vec<f32>, Vec<f32>) {
    let grads = bn
        .backward(dy)
        .expect("the last accepted forward is differentiable");
    (
        state(bn),
        bn.save_mean().unwrap(),
        bn.save_invstd().unwrap(),
        grads.grad_input.to_host().unwrap(),
    )
}

/// A refused forward, through any entry point, leaves the last accepted forward in place:
/// `save_mean()`, `save_invstd()` and `backward` still see it.
#[test]
fn a_rejected_forward_keeps_the_last_forward() {
    let ctx = support::context();
    let shape = [2, 3, 2, 2];
    let numel: usize = shape.iter().product();
    let x = input(&ctx, &shape);
    let x_cl = input(&ctx, &shape).with_memory_format(MemoryFormat::ChannelsLast);
    let x16 = Tensor::from_f32_as_f16(&ctx, &vec![0.5; numel], &shape).unwrap();
    let y = Tensor::empty(&ctx, &shape).unwrap();
    let y16 = Tensor::empty_of(&ctx, &shape, DType::F16, MemoryFormat::Contiguous).unwrap();
    let dy = Tensor::from_slice(
        &ctx,
        &(0..numel)
            .map(|i| (i as f32 * 0.3).cos())
            .collect::<Vec<_>>(),
        &shape,
    )
    .unwrap();
    let mut bn = trained_module(&ctx, BatchNormOptions::default());
    let before = observed(&mut bn, &dy);
    type Call<'a> = Box<dyn Fn(&mut BatchNorm) -> Result<(), Error> + 'a>;
    let encode = |f: &dyn Fn(&mut BatchNorm, &mut wgpu::CommandEncoder) -> Result<(), Error>,
                  bn: &mut BatchNorm| {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        let result = f(bn, &mut encoder);
        // Submitted anyway: a refused call must have recorded nothing harmful either.
        ctx.queue().submit(Some(encoder.finish()));
        result
    };
    let calls: Vec<(&str, Call)> = vec![
        (
            "residual in another memory format",
            Box::new(|bn| bn.forward_residual(&x, &x_cl).map(drop)),
        ),
        (
            "residual of another dtype",
            Box::new(|bn| bn.forward_residual(&x16, &x).map(drop)),
        ),
        (
            "output in another memory format",
            Box::new(|bn| bn.forward_with(&x_cl).output(&y).run().map(drop)),
        ),
        (
            "output of another dtype",
            Box::new(|bn| bn.forward_with(&x).output(&y16).run().map(drop)),
        ),
        (
            "output aliasing the input",
            Box::new(|bn| bn.forward_with(&x).output(&x).run().map(drop)),
        ),
        (
            "wrong channel count",
            Box::new(|bn| bn.forward(&input(&ctx, &[2, 4, 2, 2])).map(drop)),
        ),
        (
            "encode-only, output aliasing the input",
            Box::new(|bn| encode(&|bn, e| bn.encode_forward(e, &x, &x), bn)),
        ),
        (
            "encode-only with a residual in another memory format",
            Box::new(|bn| {
                encode(
                    &|bn, e| {
                        bn.forward_with(&x)
                            .residual(&x_cl)
                            .output(&y)
                            .encode(e)
                            .map(drop)
                    },
                    bn,
                )
            }),
        ),
        (
            "encode-only, output of another dtype",
            Box::new(|bn| {
                encode(
                    &|bn, e| bn.forward_with(&x).output(&y16).encode(e).map(drop),
                    bn,
                )
            }),
        ),
    ];
    for (what, call) in &calls {
        let err = call(&mut bn).expect_err(what);
        assert!(
            err.torch_kind().is_some() || err == Error::Aliasing,
            "{what}: {err}"
        );
        assert_eq!(observed(&mut bn, &dy), before, "{what}: the module changed");
    }
    // In eval mode too: the last training forward's statistics stay.
    bn.eval();
    for (what, call) in &calls {
        call(&mut bn).expect_err(what);
    }
    bn.train();
    assert_eq!(observed(&mut bn, &dy), before, "after eval-mode rejections");
}
