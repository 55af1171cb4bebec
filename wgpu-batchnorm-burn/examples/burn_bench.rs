//! Batch norm inside Burn, timed in one process on one device: Burn's `nn::BatchNorm`
//! (`"burn-nn"`), this crate's module (`"wgpu-batchnorm-burn"`) and, for the integration's
//! overhead, the core crate's module on the same `wgpu::Device` (`"wgpu-batchnorm"`).
//!
//! ```sh
//! cargo run --release -p wgpu-batchnorm-burn --example burn_bench -- [--reps N] [--only 32x64x56x56] [--json FILE]
//! ```
//!
//! Every timed iteration ends with a device sync (Burn's `Device::sync`, the core crate's
//! `Context::wait`), so each is one whole call, queue to completion. Ops: `train_forward`
//! (batch statistics and the running update, on an autodiff device), `eval_forward` (running
//! statistics, no autodiff) and `train_forward_backward` (`y.backward()` from a seed of ones in
//! Burn, for both modules; `forward` + `backward` into preallocated outputs in the core
//! crate). A shape Burn cannot hold
//! on the adapter is skipped, said so. Prints a table and writes JSON rows
//! `{"impl", "op", "shape", "median_ms"}`.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use wgpu_batchnorm::planner::BENCH_SHAPES;

struct Row {
    imp: &'static str,
    op: &'static str,
    shape: Vec<usize>,
    median_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median wall time of `f` over `reps` runs, after one warm-up run.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn sync(device: &Device) {
    device.sync().expect("device sync");
}

fn burn_rows<const D: usize>(
    shape: &[usize],
    reps: usize,
    plain: &Device,
    autodiff: &Device,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let dims: [usize; D] = shape.try_into().expect("rank D");
    let c = shape[1];
    let dist = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<D>::random(dims, dist, autodiff);
    let x_eval = Tensor::<D>::random(dims, dist, plain);
    let mut push = |imp, op, median_ms| {
        rows.push(Row {
            imp,
            op,
            shape: shape.to_vec(),
            median_ms,
        })
    };

    let ours = wgpu_batchnorm_burn::BatchNormConfig::new(c).init(autodiff);
    let ours_eval = wgpu_batchnorm_burn::BatchNormConfig::new(c).init(plain);
    let burns = burn::nn::BatchNormConfig::new(c).init(autodiff);
    let burns_eval = burn::nn::BatchNormConfig::new(c).init(plain);
    // A tensor Burn cannot hold on this adapter fails when read, not when queued: read a sum
    // of each module's output once, untimed, before timing anything.
    // Without fusion this crate's op binds Burn's buffers when called, and a buffer Burn could
    // not allocate is a panic there (a backend op has no error channel), hence catch_unwind.
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for y in [ours.forward(x.clone()), burns.forward(x.clone())] {
            y.sum().try_into_data().map_err(|e| format!("{e}"))?;
        }
        Ok::<(), String>(())
    }));
    probe.map_err(|_| "a Burn buffer failed (the panic above)".to_string())??;

    // Each output stays alive until the sync: fusion may drop work whose result is unused.
    push(
        "burn-nn",
        "train_forward",
        time(reps, || {
            let y = burns.forward(x.clone());
            sync(autodiff);
            drop(y);
        }),
    );
    push(
        "wgpu-batchnorm-burn",
        "train_forward",
        time(reps, || {
            let y = ours.forward(x.clone());
            sync(autodiff);
            drop(y);
        }),
    );
    push(
        "burn-nn",
        "eval_forward",
        time(reps, || {
            let y = burns_eval.forward(x_eval.clone());
            sync(plain);
            drop(y);
        }),
    );
    push(
        "wgpu-batchnorm-burn",
        "eval_forward",
        time(reps, || {
            let y = ours_eval.forward(x_eval.clone());
            sync(plain);
            drop(y);
        }),
    );
    let xg = x.clone().require_grad();
    // The backward from a seed of ones (`y.backward()`): one fill kernel of Burn's, where a
    // loss such as `(y * dy).sum()` would add a product, a reduction and their backward.
    let step = |y: Tensor<D>| {
        let grads = y.backward();
        let gx = xg.grad(&grads);
        sync(autodiff);
        drop(gx);
    };
    push(
        "burn-nn",
        "train_forward_backward",
        time(reps, || step(burns.forward(xg.clone()))),
    );
    push(
        "wgpu-batchnorm-burn",
        "train_forward_backward",
        time(reps, || step(ours.forward(xg.clone()))),
    );
    Ok(())
}

/// The core crate's module on the same device: what the integration adds is the difference.
fn core_rows(ctx: &wgpu_batchnorm::Context, shape: &[usize], reps: usize, rows: &mut Vec<Row>) {
    let flavor = wgpu_batchnorm::Flavor::for_rank(shape.len()).expect("rank 2 to 5");
    let c = shape[1];
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let x = wgpu_batchnorm::Tensor::from_slice(ctx, &values, shape).expect("upload");
    let dy = wgpu_batchnorm::Tensor::from_slice(ctx, &values, shape).expect("upload");
    let mut bn =
        wgpu_batchnorm::BatchNorm::new(ctx, flavor, c, Default::default()).expect("module");
    let mut push = |op, median_ms| {
        rows.push(Row {
            imp: "wgpu-batchnorm",
            op,
            shape: shape.to_vec(),
            median_ms,
        })
    };
    // Outputs allocated once, as a framework's step reuses its buffers.
    let y = wgpu_batchnorm::Tensor::empty(ctx, shape).expect("alloc");
    let dx = wgpu_batchnorm::Tensor::empty(ctx, shape).expect("alloc");
    let dw = wgpu_batchnorm::Tensor::empty(ctx, &[c]).expect("alloc");
    let db = wgpu_batchnorm::Tensor::empty(ctx, &[c]).expect("alloc");
    bn.train();
    push(
        "train_forward",
        time(reps, || {
            bn.forward_with(&x).output(&y).run().expect("forward");
            ctx.wait().expect("wait");
        }),
    );
    bn.eval();
    push(
        "eval_forward",
        time(reps, || {
            bn.forward_with(&x).output(&y).run().expect("forward");
            ctx.wait().expect("wait");
        }),
    );
    bn.train();
    push(
        "train_forward_backward",
        time(reps, || {
            let (_, saved) = bn.forward_with(&x).output(&y).run().expect("forward");
            bn.backward_with(&dy)
                .saved(&saved)
                .outputs(wgpu_batchnorm::GradOutputs {
                    grad_input: Some(&dx),
                    grad_weight: Some(&dw),
                    grad_bias: Some(&db),
                    grad_residual: None,
                })
                .run()
                .expect("backward");
            ctx.wait().expect("wait");
        }),
    );
}

fn main() {
    let mut reps = 5;
    let mut only: Option<Vec<usize>> = None;
    let mut json: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).expect("--reps N"),
            "--only" => {
                only = args.next().map(|s| {
                    s.split('x')
                        .map(|d| d.parse().expect("a dimension"))
                        .collect()
                })
            }
            "--json" => json = args.next(),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let (wgpu_device, ctx) = wgpu_batchnorm_burn::new_shared_device().expect("a wgpu device");
    println!(
        "adapter: {}; Burn fusion: {}; {reps} reps, median",
        ctx.adapter(),
        if cfg!(feature = "fusion") {
            "on"
        } else {
            "off"
        }
    );
    let plain = Device::new(wgpu_device);
    let autodiff = plain.clone().autodiff();
    let shapes: Vec<Vec<usize>> = match only {
        Some(s) => vec![s],
        None => BENCH_SHAPES.iter().map(|s| s.to_vec()).collect(),
    };
    let mut rows = Vec::new();
    for shape in &shapes {
        let name: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let burn = match shape.len() {
            2 => burn_rows::<2>(shape, reps, &plain, &autodiff, &mut rows),
            3 => burn_rows::<3>(shape, reps, &plain, &autodiff, &mut rows),
            4 => burn_rows::<4>(shape, reps, &plain, &autodiff, &mut rows),
            5 => burn_rows::<5>(shape, reps, &plain, &autodiff, &mut rows),
            r => panic!("rank {r}"),
        };
        if let Err(e) = burn {
            println!(
                "{:<16} skipped: Burn cannot run it on this adapter: {e}",
                name.join("x")
            );
            continue;
        }
        core_rows(&ctx, shape, reps, &mut rows);
        let get = |imp: &str, op: &str| {
            rows.iter()
                .find(|r| r.imp == imp && r.op == op && &r.shape == shape)
                .map(|r| r.median_ms)
                .unwrap_or(f64::NAN)
        };
        for op in ["train_forward", "eval_forward", "train_forward_backward"] {
            let (b, o, core) = (
                get("burn-nn", op),
                get("wgpu-batchnorm-burn", op),
                get("wgpu-batchnorm", op),
            );
            println!(
                "{:<16} {op:<23} burn-nn {b:>9.3} ms  ours {o:>9.3} ms ({:>5.1}x faster)  core {core:>9.3} ms (ours/core {:.2})",
                name.join("x"),
                b / o,
                o / core
            );
        }
    }
    if let Some(path) = json {
        let lines: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"impl\": \"{}\", \"op\": \"{}\", \"shape\": {:?}, \"median_ms\": {:.4}}}",
                    r.imp, r.op, r.shape, r.median_ms
                )
            })
            .collect();
        std::fs::write(&path, format!("[\n{}\n]\n", lines.join(",\n"))).expect("write JSON");
        println!("wrote {path}");
    }
}
