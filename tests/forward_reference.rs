//! Random shapes and multi-step sequences against the f64 CPU reference, on both reduction
//! paths, with the golden README's tolerances (TOL = 1e-5, K = 1 + kappa / 30).

mod support;

use support::checks::{module_pair, set_running};
use support::golden::{per_channel_ratio, rel_l2_ratio, TOL};
use support::Rng;
use wgpu_batchnorm::reference;
use wgpu_batchnorm::{BatchNorm, BatchNormOptions, Context, Flavor, Tensor};

/// How a sequence's data are drawn.
#[derive(Clone, Copy)]
struct Data {
    mean_lo: f64,
    mean_hi: f64,
    std_lo: f64,
    std_hi: f64,
}

const ORDINARY: Data = Data {
    mean_lo: -1.5,
    mean_hi: 1.5,
    std_lo: 0.5,
    std_hi: 2.0,
};

/// Runs `modes` (true = training) on the GPU and on the reference from the same random state,
/// comparing every output, running statistic and num_batches_tracked. Returns the worst ratio.
fn run_sequence(
    ctx: &Context,
    shape: &[usize],
    options: BatchNormOptions,
    modes: &[bool],
    data: Data,
    seed: u64,
) -> f64 {
    let c = shape[1];
    let mut rng = Rng::new(seed);
    let (mut gpu, mut cpu) = module_pair(ctx, shape, options, &mut rng);
    let means: Vec<f64> = (0..c)
        .map(|_| rng.range(data.mean_lo, data.mean_hi))
        .collect();
    let stds: Vec<f64> = (0..c)
        .map(|_| rng.range(data.std_lo, data.std_hi))
        .collect();
    if options.track_running_stats {
        // Near the data, so that eval outputs stay O(1) and kappa small.
        let rm: Vec<f32> = means
            .iter()
            .map(|&m| (m + 0.1 * rng.normal()) as f32)
            .collect();
        let rv: Vec<f32> = stds
            .iter()
            .map(|&s| (s * s * rng.range(0.5, 2.0)) as f32)
            .collect();
        set_running(&mut gpu, &mut cpu, &rm, &rv);
    }
    let mut worst: f64 = 0.0;
    for (step, &training) in modes.iter().enumerate() {
        gpu.set_training(training);
        cpu.training = training;
        let x = rng.channel_data(shape, &means, &stds);
        let xt = Tensor::from_slice(ctx, &x, shape).unwrap();
        let y = gpu.forward(&xt).unwrap().to_vec(ctx).unwrap();
        let y64 = cpu.forward(&x, shape).unwrap();
        let (mean, var) = cpu.last_stats.clone().unwrap();
        let kappa_c = reference::kappa(&mean, &var, options.eps);
        let kappa = kappa_c.iter().copied().fold(0.0, f64::max);
        let r = rel_l2_ratio(&y, &y64, 1.0 + kappa / 30.0);
        assert!(r <= 1.0, "{shape:?} step {step}: output err/allowed {r}");
        worst = worst.max(r);
        if options.track_running_stats {
            let rm = gpu.running_mean().unwrap().unwrap();
            let rv = gpu.running_var().unwrap().unwrap();
            let (rm64, rv64) = (&cpu.running_mean, &cpu.running_var);
            let r_mean =
                per_channel_ratio(&rm, rm64, |ch| TOL * (rm64[ch].abs() + rv64[ch].sqrt()));
            let r_var =
                per_channel_ratio(&rv, rv64, |ch| TOL * (1.0 + kappa_c[ch] / 30.0) * rv64[ch]);
            assert!(
                r_mean <= 1.0,
                "{shape:?} step {step}: running_mean err/allowed {r_mean}"
            );
            assert!(
                r_var <= 1.0,
                "{shape:?} step {step}: running_var err/allowed {r_var}"
            );
            worst = worst.max(r_mean).max(r_var);
            assert_eq!(
                gpu.num_batches_tracked().unwrap(),
                Some(cpu.num_batches_tracked),
                "{shape:?} step {step}"
            );
        }
    }
    worst
}

const TRAIN_EVAL: &[bool] = &[true, true, false, true, false];

#[test]
fn odd_and_degenerate_shapes_match_the_reference() {
    let shapes: &[&[usize]] = &[
        &[2, 3],          // two values per channel
        &[5, 7],          // (N, C)
        &[3, 5, 9],       // (N, C, L)
        &[1, 6, 4, 7],    // N = 1
        &[7, 1, 3, 5],    // C = 1
        &[9, 4, 1, 1],    // spatial = 1
        &[3, 7, 5, 11],   // odd sizes
        &[16, 3, 17, 13], // plane of 221 values, scalar path
        &[4, 5, 2, 2],    // plane of 4 values, vec4 path with one item per plane
        &[2, 3, 4, 5, 6], // 3d
        &[33, 65, 3],     // neither a power of two nor a multiple of 4
        &[300, 10],       // many planes of one value
        &[2, 4, 32, 32],  // a plane longer than a workgroup
    ];
    for (label, ctx) in support::contexts() {
        let mut worst: f64 = 0.0;
        for (i, shape) in shapes.iter().enumerate() {
            let r = run_sequence(
                &ctx,
                shape,
                BatchNormOptions::default(),
                TRAIN_EVAL,
                ORDINARY,
                i as u64,
            );
            worst = worst.max(r);
        }
        println!("[{label}] worst err/allowed {worst:.3e}");
    }
}

#[test]
fn every_momentum_and_option_mode_matches_the_reference() {
    let shape = [6, 5, 7, 3];
    let variants = [
        BatchNormOptions {
            momentum: Some(0.1),
            ..Default::default()
        },
        BatchNormOptions {
            momentum: Some(0.3),
            eps: 1e-3,
            ..Default::default()
        },
        BatchNormOptions {
            momentum: None,
            ..Default::default()
        },
        BatchNormOptions {
            momentum: Some(1.0),
            ..Default::default()
        },
        BatchNormOptions {
            momentum: Some(0.0),
            ..Default::default()
        },
        BatchNormOptions {
            affine: false,
            ..Default::default()
        },
        BatchNormOptions {
            track_running_stats: false,
            ..Default::default()
        },
        BatchNormOptions {
            affine: false,
            track_running_stats: false,
            momentum: None,
            ..Default::default()
        },
    ];
    let modes = [true, true, true, false, true, true, false, true];
    for (label, ctx) in support::contexts() {
        for (i, options) in variants.iter().enumerate() {
            let r = run_sequence(&ctx, &shape, *options, &modes, ORDINARY, 100 + i as u64);
            println!("[{label}] {options:?}: worst err/allowed {r:.3e}");
        }
    }
}

#[test]
fn ill_conditioned_data_match_the_reference() {
    // |mean| / std up to ~1e4: the naive E[x^2] - E[x]^2 fails this by orders of magnitude.
    let large_mean = Data {
        mean_lo: 500.0,
        mean_hi: 1000.0,
        std_lo: 0.05,
        std_hi: 0.2,
    };
    let small_var = Data {
        mean_lo: -1.0,
        mean_hi: 1.0,
        std_lo: 1e-3,
        std_hi: 1e-2,
    };
    for (label, ctx) in support::contexts() {
        // The last two take one invocation per channel: scalar items (130 channels) and
        // vec4 items across channels (132).
        let shapes: [&[usize]; 5] = [
            &[8, 3, 16, 16],
            &[64, 6, 5],
            &[2, 2, 4096],
            &[256, 130],
            &[256, 132],
        ];
        for (i, shape) in shapes.iter().enumerate() {
            let a = run_sequence(
                &ctx,
                shape,
                BatchNormOptions::default(),
                TRAIN_EVAL,
                large_mean,
                200 + i as u64,
            );
            let eps3 = BatchNormOptions {
                eps: 1e-3,
                ..Default::default()
            };
            let b = run_sequence(&ctx, shape, eps3, TRAIN_EVAL, small_var, 300 + i as u64);
            println!("[{label}] {shape:?}: large mean {a:.3e}, small variance {b:.3e}");
        }
    }
}

#[test]
fn many_channels_match_the_reference() {
    for (label, ctx) in support::contexts() {
        let a = run_sequence(
            &ctx,
            &[3, 4099],
            BatchNormOptions::default(),
            TRAIN_EVAL,
            ORDINARY,
            400,
        );
        let b = run_sequence(
            &ctx,
            &[2, 4096, 3, 3],
            BatchNormOptions::default(),
            &[true, false],
            ORDINARY,
            401,
        );
        // More channels than one grid dimension holds: the per-channel passes fold their grid.
        let wide = run_sequence(
            &ctx,
            &[2, 70_000],
            BatchNormOptions::default(),
            &[true, false],
            ORDINARY,
            402,
        );
        println!("[{label}] C = 4099: {a:.3e}, C = 4096 x 3 x 3: {b:.3e}, C = 70000: {wide:.3e}");
    }
}

#[test]
fn one_channel_with_millions_of_values_matches_the_reference() {
    // 4,194,304 values in one channel through the vec4 path, 4,194,311 through the scalar
    // path; the mean is far from 0 so that a long sequential f32 sum would drift.
    let shapes: &[&[usize]] = &[&[4, 1, 1024, 1024], &[1, 1, 4_194_311]];
    let data = Data {
        mean_lo: 3.0,
        mean_hi: 3.0,
        std_lo: 1.0,
        std_hi: 1.0,
    };
    for (label, ctx) in support::contexts() {
        for (i, shape) in shapes.iter().enumerate() {
            let r = run_sequence(
                &ctx,
                shape,
                BatchNormOptions::default(),
                &[true, false],
                data,
                500 + i as u64,
            );
            println!("[{label}] {shape:?}: worst err/allowed {r:.3e}");
        }
    }
}

#[test]
fn constant_channels_normalize_to_exactly_bias() {
    for (label, ctx) in support::contexts() {
        for shape in [[4usize, 3, 6, 6], [4, 3, 5, 7]] {
            let mut bn =
                BatchNorm::new(&ctx, Flavor::TwoD, 3, BatchNormOptions::default()).unwrap();
            bn.set_bias(&[0.25, -1.5, 3.0]).unwrap();
            bn.set_weight(&[2.0, 0.5, -1.0]).unwrap();
            let s = shape[2] * shape[3];
            let consts = [0.1f32, 2.5, -7.3];
            let x: Vec<f32> = (0..shape[0] * 3 * s).map(|i| consts[(i / s) % 3]).collect();
            let y = bn
                .forward(&Tensor::from_slice(&ctx, &x, &shape).unwrap())
                .unwrap()
                .to_vec(&ctx)
                .unwrap();
            for (i, v) in y.iter().enumerate() {
                let want = [0.25f32, -1.5, 3.0][(i / s) % 3];
                assert_eq!(*v, want, "[{label}] {shape:?} element {i}");
            }
            let rv = bn.running_var().unwrap().unwrap();
            assert_eq!(
                rv,
                vec![0.9f32; 3],
                "[{label}] running_var of constant channels"
            );
        }
    }
}

/// Many short channels take one invocation per channel (vec4 items across channels where C is
/// a multiple of 4, scalar items otherwise): constant channels still normalize to exactly the
/// bias, and their running variance is exactly (1 - momentum) * 1.
#[test]
fn constant_short_channels_normalize_to_exactly_bias() {
    for (label, ctx) in support::contexts() {
        for c in [128usize, 129] {
            let n = 6;
            let mut bn =
                BatchNorm::new(&ctx, Flavor::OneD, c, BatchNormOptions::default()).unwrap();
            let bias: Vec<f32> = (0..c).map(|i| i as f32 * 0.25 - 3.0).collect();
            bn.set_bias(&bias).unwrap();
            let consts: Vec<f32> = (0..c)
                .map(|i| (i as f32 * 0.37).sin() * 1e3 + 0.1)
                .collect();
            let x: Vec<f32> = (0..n * c).map(|i| consts[i % c]).collect();
            let y = bn
                .forward(&Tensor::from_slice(&ctx, &x, &[n, c]).unwrap())
                .unwrap()
                .to_vec(&ctx)
                .unwrap();
            for (i, v) in y.iter().enumerate() {
                assert_eq!(*v, bias[i % c], "[{label}] C = {c}: element {i}");
            }
            let rm = bn.running_mean().unwrap().unwrap();
            let rv = bn.running_var().unwrap().unwrap();
            for ch in 0..c {
                assert_eq!(
                    rm[ch],
                    0.1 * consts[ch],
                    "[{label}] C = {c}: running_mean[{ch}]"
                );
                assert_eq!(rv[ch], 0.9, "[{label}] C = {c}: running_var[{ch}]");
            }
        }
    }
}

/// The opt-in biased running variance (ONNX / Keras / Burn) tracks M2 / n; the default stays
/// PyTorch's M2 / (n - 1).
#[test]
fn the_biased_running_variance_option_tracks_m2_over_n() {
    let ctx = support::context();
    let shape = [3usize, 4, 5];
    let mut rng = support::Rng::new(77);
    let x = rng.vec_f32(shape.iter().product(), -2.0, 3.0);
    let (_, var) = wgpu_batchnorm::reference::batch_stats(&x, &shape).unwrap();
    let n = 15.0;
    // One module switched back and forth: the update's parameters follow the switch.
    let mut bn = wgpu_batchnorm::BatchNorm1d::new(&ctx, 4).unwrap();
    assert!(!bn.running_var_biased());
    for biased in [false, true, false] {
        bn.reset_running_stats().unwrap();
        bn.set_running_var_biased(biased);
        let xt = wgpu_batchnorm::Tensor::from_slice(&ctx, &x, &shape).unwrap();
        bn.forward(&xt).unwrap();
        let got = bn.running_var().unwrap().unwrap();
        for (ch, (&g, &v)) in got.iter().zip(&var).enumerate() {
            let batch = if biased { v } else { v * n / (n - 1.0) };
            let want = 0.9 + 0.1 * batch;
            assert!(
                (f64::from(g) - want).abs() <= 1e-6 * want,
                "biased {biased} channel {ch}: {g} vs {want}"
            );
        }
    }
}
