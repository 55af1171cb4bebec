//! The planner's description of a call is what the call records: for both profiles, every
//! call kind, both memory formats, f32 and f16 and the epilogue, the dispatches and workgroups
//! a `Functional` records equal those of `Context::plan_call` for the same call.

#![cfg(not(target_arch = "wasm32"))]

mod support;

use support::Rng;
use wgpu_batchnorm::planner::{CallDesc, CallKind};
use wgpu_batchnorm::profile::ProfileKind;
use wgpu_batchnorm::testing::Counters;
use wgpu_batchnorm::{
    Activation, BackwardArgs, BatchCounter, Context, ContextOptions, DType, ForwardArgs,
    Functional, MemoryFormat, RunningStats, SavedStats, Tensor,
};

fn context(profile: ProfileKind) -> Context {
    let mut options = ContextOptions::from_env();
    options.profile = Some(profile);
    Context::with_options(options).unwrap()
}

/// Records `kind` on fresh tensors of `shape` and returns (dispatches, workgroups) recorded.
fn recorded(
    ctx: &Context,
    shape: &[usize],
    (format, dtype, epilogue): (MemoryFormat, DType, bool),
    kind: CallKind,
) -> (u64, u64) {
    let c = shape[1];
    let numel: usize = shape.iter().product();
    let mut rng = Rng::new(numel as u64);
    let tensor = |values: &[f32]| {
        let t = match dtype {
            DType::F32 => Tensor::from_slice(ctx, values, shape).unwrap(),
            DType::F16 => Tensor::from_f32_as_f16(ctx, values, shape).unwrap(),
        };
        t.with_memory_format(format)
    };
    let x = tensor(&rng.vec_f32(numel, -2.0, 2.0));
    let dy = tensor(&rng.vec_f32(numel, -1.0, 1.0));
    let residual = tensor(&rng.vec_f32(numel, -1.0, 1.0));
    let y = Tensor::empty_of(ctx, shape, dtype, format).unwrap();
    let dx = Tensor::empty_of(ctx, shape, dtype, format).unwrap();
    let dr = Tensor::empty_of(ctx, shape, dtype, format).unwrap();
    let channel = |v: f32| Tensor::from_slice(ctx, &vec![v; c], &[c]).unwrap();
    let (weight, bias, rm, rv) = (channel(1.5), channel(0.25), channel(0.0), channel(1.0));
    let (mean, invstd, gw, gb) = (channel(0.0), channel(1.0), channel(0.0), channel(0.0));
    let counter = BatchCounter::new(ctx).unwrap();
    let activation = if epilogue {
        Activation::Relu
    } else {
        Activation::Identity
    };
    let residual = epilogue.then_some(&residual);
    let mut f = Functional::new(ctx);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    match kind {
        CallKind::TrainingForward | CallKind::EvalForward => f
            .encode(
                &mut encoder,
                &ForwardArgs {
                    weight: Some(&weight),
                    bias: Some(&bias),
                    running: Some(RunningStats {
                        mean: &rm,
                        var: &rv,
                        num_batches_tracked: Some(&counter),
                    }),
                    training: kind == CallKind::TrainingForward,
                    momentum: Some(0.1),
                    save_mean: Some(&mean),
                    save_invstd: Some(&invstd),
                    activation,
                    residual,
                    ..ForwardArgs::new(&x, &y)
                },
            )
            .unwrap(),
        CallKind::Backward => f
            .encode(
                &mut encoder,
                &BackwardArgs {
                    weight: Some(&weight),
                    bias: Some(&bias),
                    grad_input: Some(&dx),
                    grad_weight: Some(&gw),
                    grad_bias: Some(&gb),
                    // As the module asks: grad_residual whenever the forward had a residual.
                    grad_residual: epilogue.then_some(&dr),
                    activation,
                    residual,
                    stats: SavedStats::Batch {
                        save_mean: &mean,
                        save_invstd: &invstd,
                    },
                    ..BackwardArgs::new(&x, &dy)
                },
            )
            .unwrap(),
    }
    ctx.queue().submit(Some(encoder.finish()));
    ctx.wait().unwrap();
    f.dispatches_recorded()
}

#[test]
fn plans_describe_what_calls_record() {
    for profile in [ProfileKind::Cpu, ProfileKind::Gpu] {
        let ctx = context(profile);
        for shape in [
            &[256usize, 1024][..],
            &[4, 2048, 7, 7],
            &[8, 32, 12, 12],
            &[6, 20, 37],
            &[37, 12],
            &[2, 3, 5, 3],
        ] {
            for format in [MemoryFormat::Contiguous, MemoryFormat::ChannelsLast] {
                if format == MemoryFormat::ChannelsLast && shape.len() < 3 {
                    continue;
                }
                for (dtype, epilogue) in
                    [(DType::F32, false), (DType::F32, true), (DType::F16, false)]
                {
                    for kind in CallKind::ALL {
                        let mut desc = CallDesc {
                            activation: epilogue,
                            residual: epilogue,
                            ..CallDesc::nchw(shape, dtype, kind)
                        };
                        if format == MemoryFormat::ChannelsLast {
                            desc = desc.channels_last();
                        }
                        let plan = ctx.plan_call(&desc);
                        let planned = (
                            plan.dispatches.len() as u64,
                            plan.dispatches
                                .iter()
                                .map(|d| d.invocations / u64::from(d.workgroup_size))
                                .sum::<u64>(),
                        );
                        let got = recorded(&ctx, shape, (format, dtype, epilogue), kind);
                        assert!(got.0 > 0 && got.1 > 0, "nothing recorded\n{plan}");
                        assert_eq!(
                            got, planned,
                            "{profile:?} {format:?} {dtype:?} epilogue {epilogue}: recorded \
                             (dispatches, workgroups) differ from the plan\n{plan}"
                        );
                    }
                }
            }
        }
    }
}
