//! Property tests: random shapes (rank 2 to 5, sizes 1 to 300, odd sizes, N = 1, spatial 1),
//! options (eps, momentum incl. None, affine, track_running_stats) and step sequences (train,
//! eval and backward interleaved), on the module and on the functional API, and memory formats
//! with fused activations and residuals, against the f64 reference under the golden README's
//! tolerances. A failure shrinks to a minimal case.
//!
//! The runs are deterministic (a fixed seed) and bounded to seconds on lavapipe; set
//! `PROPTEST_CASES` to run more.

mod support;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use support::checks::{forward_ratio, gradient_ratio, gradient_ratio_through, module_pair};
use support::golden::{per_channel_ratio, TOL};
use support::Rng;
use wgpu_batchnorm::half;
use wgpu_batchnorm::reference::{self, ReferenceBatchNorm};
use wgpu_batchnorm::{
    Activation, BackwardArgs, BatchCounter, BatchNormOptions, Context, DType, Error, ForwardArgs,
    Functional, Gradients, MemoryFormat, PassPlan, RunningStats, SavedStats, Tensor,
};

/// Cases are shrunk to at most this many values, so each runs in milliseconds.
const MAX_NUMEL: usize = 6000;

/// Mostly small sizes, where the walks change, and some up to 300.
fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 1usize..=4, 3 => 5usize..=40, 1 => 41usize..=300]
}

/// A shape of rank 2 to 5, its largest dimension halved until it holds at most MAX_NUMEL
/// values (halving keeps odd sizes odd half the time).
fn shape() -> impl Strategy<Value = Vec<usize>> {
    (2usize..=5)
        .prop_flat_map(|rank| prop::collection::vec(dim(), rank))
        .prop_map(|mut shape| {
            while shape.iter().product::<usize>() > MAX_NUMEL {
                let (i, _) = shape.iter().enumerate().max_by_key(|(_, &d)| d).unwrap();
                shape[i] = shape[i].div_ceil(2);
            }
            shape
        })
}

fn options() -> impl Strategy<Value = BatchNormOptions> {
    (
        prop::sample::select(vec![1e-5, 1e-3, 0.1, 1.0]),
        prop_oneof![Just(None), (0.0f64..=1.0).prop_map(Some)],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(eps, momentum, affine, track)| BatchNormOptions {
            eps,
            momentum,
            affine,
            track_running_stats: track,
        })
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Train,
    Eval,
    /// Differentiates the last forward that succeeded.
    Backward,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![Just(Step::Train), Just(Step::Eval), Just(Step::Backward)]
}

/// One context for all cases, and a fixed seed.
fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    TestRunner::new_with_rng(config, rng)
}

/// Per-channel data around channel means up to 20 standard deviations away from zero, so
/// the tolerances' conditioning factor is exercised too.
fn data(rng: &mut Rng, shape: &[usize]) -> Vec<f32> {
    let c = shape[1];
    let means: Vec<f64> = (0..c).map(|_| rng.range(-20.0, 20.0)).collect();
    let stds: Vec<f64> = (0..c).map(|_| rng.range(0.2, 3.0)).collect();
    rng.channel_data(shape, &means, &stds)
}

/// Whether batch statistics of `shape` are defined (more than one value per channel).
fn enough_values(shape: &[usize]) -> bool {
    shape[0] * shape[2..].iter().product::<usize>() > 1
}

/// Runs `steps` on a module and on the reference; every output, running statistic and
/// gradient within tolerance, every refused step refused by both with nothing changed.
fn check_module(
    ctx: &Context,
    shape: &[usize],
    options: BatchNormOptions,
    steps: &[Step],
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let (mut gpu, mut cpu) = module_pair(ctx, shape, options, &mut rng);
    let what = format!("{shape:?} {options:?} {steps:?}");
    let mut last_x: Option<Vec<f32>> = None;
    for (i, &step) in steps.iter().enumerate() {
        let what = format!("{what} step {i} {step:?}");
        match step {
            Step::Train | Step::Eval => {
                let training = matches!(step, Step::Train);
                gpu.set_training(training);
                cpu.training = training;
                let x = data(&mut rng, shape);
                let xt = Tensor::from_slice(ctx, &x, shape).unwrap();
                let before = (
                    gpu.running_mean().unwrap(),
                    gpu.num_batches_tracked().unwrap(),
                );
                let batch_stats = training || !options.track_running_stats;
                if batch_stats && !enough_values(shape) {
                    let err = gpu.forward(&xt).unwrap_err();
                    assert!(
                        matches!(err, Error::TooFewValuesPerChannel { .. }),
                        "{what}: {err}"
                    );
                    let after = (
                        gpu.running_mean().unwrap(),
                        gpu.num_batches_tracked().unwrap(),
                    );
                    assert_eq!(
                        before, after,
                        "{what}: a refused forward changed the module"
                    );
                    continue;
                }
                let y = gpu.forward(&xt).unwrap().to_host().unwrap();
                let y64 = cpu.forward(&x, shape).unwrap();
                let running = gpu.running_mean().unwrap().zip(gpu.running_var().unwrap());
                forward_ratio(&what, &y, &y64, running, &cpu);
                assert_eq!(
                    gpu.num_batches_tracked().unwrap(),
                    options
                        .track_running_stats
                        .then_some(cpu.num_batches_tracked),
                    "{what}"
                );
                last_x = Some(x);
            }
            Step::Backward => {
                let dy = rng.vec_f32(shape.iter().product(), -1.0, 1.0);
                let dyt = Tensor::from_slice(ctx, &dy, shape).unwrap();
                match &last_x {
                    None => {
                        let err = gpu.backward(&dyt).unwrap_err();
                        assert!(matches!(err, Error::Backward(_)), "{what}: {err}");
                    }
                    Some(x) => {
                        let grads = gpu.backward(&dyt).unwrap();
                        gradient_ratio(ctx, &grads, &cpu, x, &dy, shape);
                    }
                }
            }
        }
    }
}

#[test]
fn the_module_matches_the_reference_on_random_shapes_options_and_steps() {
    let ctx = support::context();
    let strategy = (
        shape(),
        options(),
        prop::collection::vec(step(), 1..=5),
        any::<u64>(),
    );
    runner(200)
        .run(&strategy, |(shape, options, steps, seed)| {
            check_module(&ctx, &shape, options, &steps, seed);
            Ok(())
        })
        .unwrap();
}

/// One training forward and its backward through the functional API, with each optional
/// tensor present or not: weight, bias, running buffers, the counter, saved statistics.
#[derive(Clone, Copy, Debug)]
struct Present {
    weight: bool,
    bias: bool,
    running: bool,
    counter: bool,
    saved: bool,
}

fn present() -> impl Strategy<Value = Present> {
    (any::<[bool; 5]>()).prop_map(|b| Present {
        weight: b[0],
        bias: b[1],
        running: b[2],
        counter: b[3],
        saved: b[4],
    })
}

fn check_functional(
    ctx: &Context,
    shape: &[usize],
    options: BatchNormOptions,
    p: Present,
    seed: u64,
) {
    let what = format!("{shape:?} {options:?} {p:?}");
    let c = shape[1];
    let mut rng = Rng::new(seed);
    let x = data(&mut rng, shape);
    let dy = rng.vec_f32(x.len(), -1.0, 1.0);
    let w = rng.vec_f32(c, -0.5, 2.0);
    let b = rng.vec_f32(c, -1.0, 1.0);
    let rm0 = rng.vec_f32(c, -1.0, 1.0);
    let rv0 = rng.vec_f32(c, 0.5, 2.0);
    let t = |v: &[f32], shape: &[usize]| Tensor::from_slice(ctx, v, shape).unwrap();
    let (xt, dyt) = (t(&x, shape), t(&dy, shape));
    let (y, dx) = (
        Tensor::empty(ctx, shape).unwrap(),
        Tensor::empty(ctx, shape).unwrap(),
    );
    let (weight, bias) = (t(&w, &[c]), t(&b, &[c]));
    let (rm, rv) = (t(&rm0, &[c]), t(&rv0, &[c]));
    let counter = BatchCounter::new(ctx).unwrap();
    counter.set(2).unwrap();
    let (save_mean, save_invstd) = (t(&vec![0.0; c], &[c]), t(&vec![0.0; c], &[c]));
    let (dw, db) = (t(&vec![0.0; c], &[c]), t(&vec![0.0; c], &[c]));

    let mut cpu = ReferenceBatchNorm::new(c, options);
    cpu.options.affine = p.weight && p.bias;
    if p.weight {
        cpu.weight = support::widen(&w);
    }
    if p.bias {
        cpu.bias = support::widen(&b);
    }
    cpu.options.track_running_stats = p.running;
    cpu.running_mean = support::widen(&rm0);
    cpu.running_var = support::widen(&rv0);
    cpu.num_batches_tracked = 2;

    let mut f = Functional::new(ctx);
    let result = f.run(&ForwardArgs {
        weight: p.weight.then_some(&weight),
        bias: p.bias.then_some(&bias),
        running: p.running.then_some(RunningStats {
            mean: &rm,
            var: &rv,
            num_batches_tracked: p.counter.then_some(&counter),
        }),
        momentum: options.momentum,
        eps: options.eps,
        save_mean: p.saved.then_some(&save_mean),
        save_invstd: p.saved.then_some(&save_invstd),
        ..ForwardArgs::new(&xt, &y)
    });
    // A cumulative average needs the counter: without it the call is refused.
    let needs_counter = p.running && options.momentum.is_none() && !p.counter;
    if !enough_values(shape) || needs_counter {
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooFewValuesPerChannel { .. } | Error::InvalidArgument(_)
            ),
            "{what}: {err}"
        );
        assert_eq!(
            rm.to_host().unwrap(),
            rm0,
            "{what}: refused, yet running_mean changed"
        );
        assert_eq!(counter.get().unwrap(), 2, "{what}: refused, yet counted");
        return;
    }
    result.unwrap();
    let y64 = cpu.forward(&x, shape).unwrap();
    let running = p
        .running
        .then(|| (rm.to_host().unwrap(), rv.to_host().unwrap()));
    forward_ratio(&what, &y.to_host().unwrap(), &y64, running, &cpu);
    let expected_count = if p.running && p.counter { 3 } else { 2 };
    assert_eq!(counter.get().unwrap(), expected_count, "{what}");
    if p.saved {
        // The golden README's tolerances for the saved statistics.
        let (mean, var) = cpu.last_stats.clone().unwrap();
        let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + options.eps).sqrt()).collect();
        let kappa_c = reference::kappa(&mean, &var, options.eps);
        let rm = per_channel_ratio(&save_mean.to_host().unwrap(), &mean, |ch| {
            TOL * (mean[ch].abs() + var[ch].sqrt())
        });
        let ri = per_channel_ratio(&save_invstd.to_host().unwrap(), &invstd, |ch| {
            TOL * (1.0 + kappa_c[ch] / 30.0) * invstd[ch]
        });
        assert!(
            rm <= 1.0 && ri <= 1.0,
            "{what}: saved statistics err/allowed {rm} {ri}"
        );
    }

    // The backward, from the forward's saved statistics when the caller kept them.
    let stats = if p.saved {
        SavedStats::Batch {
            save_mean: &save_mean,
            save_invstd: &save_invstd,
        }
    } else {
        return;
    };
    let grads_wanted = p.weight && p.bias;
    f.run(&BackwardArgs {
        weight: p.weight.then_some(&weight),
        stats,
        grad_input: Some(&dx),
        grad_weight: grads_wanted.then_some(&dw),
        grad_bias: grads_wanted.then_some(&db),
        ..BackwardArgs::new(&xt, &dyt)
    })
    .unwrap();
    let grads = Gradients {
        grad_input: dx,
        grad_weight: grads_wanted.then_some(dw),
        grad_bias: grads_wanted.then_some(db),
        grad_residual: None,
    };
    gradient_ratio(ctx, &grads, &cpu, &x, &dy, shape);
}

#[test]
fn the_functional_api_matches_the_reference_on_random_shapes_and_arguments() {
    let ctx = support::context();
    let strategy = (shape(), options(), present(), any::<u64>());
    runner(200)
        .run(&strategy, |(shape, options, present, seed)| {
            check_functional(&ctx, &shape, options, present, seed);
            Ok(())
        })
        .unwrap();
}

/// The permutation between (N, C, *spatial) order and channels-last order: element
/// `(b, ch, i)` sits at `(nchw, channels_last)`.
fn layout_pairs(shape: &[usize]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let (n, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    (0..n).flat_map(move |b| {
        (0..c).flat_map(move |ch| (0..s).map(move |i| ((b * c + ch) * s + i, (b * s + i) * c + ch)))
    })
}

/// (N, C, *spatial) data in channels-last memory order.
fn to_channels_last(x: &[f32], shape: &[usize]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for (nchw, last) in layout_pairs(shape) {
        out[last] = x[nchw];
    }
    out
}

/// Channels-last data back in (N, C, *spatial) order.
fn from_channels_last(x: &[f32], shape: &[usize]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for (nchw, last) in layout_pairs(shape) {
        out[nchw] = x[last];
    }
    out
}

fn activation() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Identity),
        Just(Activation::Relu),
        Just(Activation::Relu6),
        Just(Activation::Silu),
        (0.0f32..0.5).prop_map(Activation::LeakyRelu),
    ]
}

/// One forward (training or eval) and its backward through an epilogue, in either memory
/// format, against the reference: y = act(bn(x) [+ r]), and the gradients of bn for
/// dz = dy * act'(z), grad_residual = dz.
fn check_epilogue(
    ctx: &Context,
    shape: &[usize],
    options: BatchNormOptions,
    (format, act, with_residual, training): (MemoryFormat, Activation, bool, bool),
    seed: u64,
) {
    let what = format!(
        "{shape:?} {options:?} {format:?} {act:?} residual {with_residual} training {training}"
    );
    if (training || !options.track_running_stats) && !enough_values(shape) {
        return;
    }
    let mut rng = Rng::new(seed);
    let (mut gpu, mut cpu) = module_pair(ctx, shape, options, &mut rng);
    gpu.set_training(training).set_activation(act);
    cpu.training = training;
    let x = data(&mut rng, shape);
    let r = rng.vec_f32(x.len(), -1.0, 1.0);
    let dy = rng.vec_f32(x.len(), -1.0, 1.0);
    let upload = |v: &[f32]| {
        let stored = match format {
            MemoryFormat::ChannelsLast => to_channels_last(v, shape),
            _ => v.to_vec(),
        };
        Tensor::from_slice_in(ctx, &stored, shape, format).unwrap()
    };
    // Where both orders coincide (no spatial extent), tensors report Contiguous.
    let stored_as = if shape[2..].iter().product::<usize>() == 1 {
        MemoryFormat::Contiguous
    } else {
        format
    };
    let download = |t: &Tensor| {
        assert_eq!(t.memory_format(), stored_as, "{what}: output memory format");
        let v = t.to_host().unwrap();
        match format {
            MemoryFormat::ChannelsLast => from_channels_last(&v, shape),
            _ => v,
        }
    };
    let rt = upload(&r);
    let (y, saved) = gpu
        .forward_with(&upload(&x))
        .residual(with_residual.then_some(&rt))
        .run()
        .unwrap();
    let bn = cpu.forward(&x, shape).unwrap();
    let z: Vec<f64> = bn
        .iter()
        .zip(&r)
        .map(|(&v, &r)| if with_residual { v + f64::from(r) } else { v })
        .collect();
    let y64: Vec<f64> = z.iter().map(|&z| act.apply(z)).collect();
    let running = gpu.running_mean().unwrap().zip(gpu.running_var().unwrap());
    forward_ratio(&what, &download(&y), &y64, running, &cpu);

    let grads = gpu.backward_saved(&saved, &upload(&dy)).unwrap();
    let dz: Vec<f32> = z
        .iter()
        .zip(&dy)
        .map(|(&z, &g)| (f64::from(g) * act.derivative(z)) as f32)
        .collect();
    let gr = grads.grad_residual.as_ref().map(download);
    assert_eq!(gr.is_some(), with_residual, "{what}: grad_residual");
    if let Some(gr) = gr {
        let (mut err, mut norm) = (0.0f64, 0.0f64);
        for (&g, &w) in gr.iter().zip(&dz) {
            err += (f64::from(g) - f64::from(w)).powi(2);
            norm += f64::from(w).powi(2);
        }
        assert!(
            err.sqrt() <= TOL * norm.sqrt().max(1e-30),
            "{what}: grad_residual err {}",
            err.sqrt()
        );
    }
    let grads = Gradients {
        grad_input: Tensor::from_slice(ctx, &download(&grads.grad_input), shape).unwrap(),
        ..grads
    };
    let through = act != Activation::Identity;
    gradient_ratio_through(ctx, &grads, &cpu, &x, &dz, shape, through);
}

#[test]
fn epilogues_and_memory_formats_match_the_reference_on_random_cases() {
    let ctx = support::context();
    let format = prop_oneof![
        Just(MemoryFormat::Contiguous),
        Just(MemoryFormat::ChannelsLast)
    ];
    let strategy = (
        shape(),
        options(),
        (format, activation(), any::<bool>(), any::<bool>()),
        any::<u64>(),
    );
    runner(150)
        .run(&strategy, |(shape, options, how, seed)| {
            check_epilogue(&ctx, &shape, options, how, seed);
            Ok(())
        })
        .unwrap();
}

/// An f16 call is the f32 call on the same (f16-exact) values with each f16 output rounded
/// once, to nearest even: outputs and input gradients equal the f32 module's rounded to f16,
/// bit for bit, and parameter gradients and running statistics equal the f32 module's. Both
/// f16 paths (f16 storage, u32 words), random shapes, memory formats and epilogues.
fn check_f16(
    contexts: &[Context],
    shape: &[usize],
    (format, act, with_residual, training): (MemoryFormat, Activation, bool, bool),
    seed: u64,
) {
    let what = format!("{shape:?} {format:?} {act:?} residual {with_residual} training {training}");
    if !enough_values(shape) {
        return;
    }
    let mut rng = Rng::new(seed);
    let numel: usize = shape.iter().product();
    let round =
        |v: Vec<f32>| -> Vec<f32> { v.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect() };
    let x = round(data(&mut rng, shape));
    let r = round(rng.vec_f32(numel, -1.0, 1.0));
    let dy = round(rng.vec_f32(numel, -1.0, 1.0));
    let mut results = Vec::new();
    for ctx in contexts {
        for dtype in [DType::F32, DType::F16] {
            let (mut bn, _) =
                module_pair(ctx, shape, BatchNormOptions::default(), &mut Rng::new(seed));
            bn.set_training(training).set_activation(act);
            let t = |v: &[f32]| {
                let t = match dtype {
                    DType::F16 => Tensor::from_f32_as_f16(ctx, v, shape),
                    _ => Tensor::from_slice(ctx, v, shape),
                };
                t.unwrap().with_memory_format(format)
            };
            let rt = t(&r);
            let (y, saved) = bn
                .forward_with(&t(&x))
                .residual(with_residual.then_some(&rt))
                .run()
                .unwrap();
            let grads = bn.backward_saved(&saved, &t(&dy)).unwrap();
            let host = |t: &Tensor| t.to_host().unwrap();
            results.push((
                dtype,
                host(&y),
                host(&grads.grad_input),
                grads.grad_residual.as_ref().map(host),
                grads.grad_weight.as_ref().map(host),
                bn.running_mean().unwrap(),
                bn.running_var().unwrap(),
            ));
        }
    }
    let rounded = |v: &[f32]| round(v.to_vec());
    for pair in results.chunks(2) {
        let (f32_run, f16_run) = (&pair[0], &pair[1]);
        assert_eq!(f16_run.1, rounded(&f32_run.1), "{what}: output");
        assert_eq!(f16_run.2, rounded(&f32_run.2), "{what}: grad_input");
        assert_eq!(
            f16_run.3,
            f32_run.3.as_deref().map(rounded),
            "{what}: grad_residual"
        );
        assert_eq!(f16_run.4, f32_run.4, "{what}: grad_weight");
        assert_eq!(
            (&f16_run.5, &f16_run.6),
            (&f32_run.5, &f32_run.6),
            "{what}: running"
        );
    }
}

#[test]
fn f16_calls_are_f32_calls_rounded_once_on_both_f16_paths() {
    let contexts = [
        support::context(),
        Context::with_options(wgpu_batchnorm::ContextOptions {
            disable_f16: true,
            ..wgpu_batchnorm::ContextOptions::from_env()
        })
        .unwrap(),
        // Bindings of 4 KiB: f16 conversions and f32 kernels both in windows. The multi-pass
        // forward is pinned: the single dispatch binds tensors whole, so it would take an f16
        // tensor that fits one window and not the f32 one twice its size, and the two calls
        // would then differ by their paths, not by their dtype.
        Context::with_options(wgpu_batchnorm::ContextOptions {
            max_binding_window: Some(4096),
            forced: wgpu_batchnorm::testing::Forced {
                pass_plan: Some(PassPlan::MultiPass),
                ..Default::default()
            },
            ..wgpu_batchnorm::ContextOptions::from_env()
        })
        .unwrap(),
        // Every training forward in one dispatch where the shape allows.
        Context::with_options(wgpu_batchnorm::ContextOptions {
            forced: wgpu_batchnorm::testing::Forced {
                pass_plan: Some(PassPlan::InvocationPerChannel),
                ..Default::default()
            },
            ..wgpu_batchnorm::ContextOptions::from_env()
        })
        .unwrap(),
    ];
    let format = prop_oneof![
        Just(MemoryFormat::Contiguous),
        Just(MemoryFormat::ChannelsLast)
    ];
    let strategy = (
        shape(),
        (format, activation(), any::<bool>(), any::<bool>()),
        any::<u64>(),
    );
    runner(60)
        .run(&strategy, |(shape, how, seed)| {
            check_f16(&contexts, &shape, how, seed);
            Ok(())
        })
        .unwrap();
}
