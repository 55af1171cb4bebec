//! Benchmark: batch norm against a plain WGSL vec4 copy of the same tensor, in the same run.
//!
//! `cargo run --release --example bench [-- --quick] [--json FILE] [--backend NAME]
//! [--adapter NAME] [--reps N]`
//!
//! For each shape and operation it prints the median time (GPU timestamps where the adapter has
//! them, else wall clock around submit + wait), the effective bandwidth under the two-pass
//! traffic model (training forward reads x twice and writes y: 12 bytes per element; eval
//! forward 8; training backward reads x and dy twice and writes dx: 20; upload and readback 4),
//! and the ratio of its time to the copy kernel's (8 bytes per element): the median of the
//! ratios to a copy of the same tensor timed right before each run.

use std::time::Instant;

use wgpu_batchnorm::bench::{median, CopyKernel, GpuTimer};
use wgpu_batchnorm::{BatchNorm, BatchNormOptions, Context, ContextOptions, Flavor, Tensor};

const SHAPES: &[&[usize]] = &[
    &[32, 64, 56, 56],
    &[64, 256, 14, 14],
    &[256, 1024],
    &[8, 32, 128, 128],
    &[16, 3, 224, 224],
    &[4, 2048, 7, 7],
    &[16, 64, 256, 256],
    // 64 MiB: the size the upload/readback target is stated for.
    &[16, 64, 128, 128],
];

struct Row {
    shape: Vec<usize>,
    op: &'static str,
    median_ms: f64,
    gb_per_s: f64,
    copy_ratio: f64,
}

struct Args {
    quick: bool,
    only: Option<String>,
    json: Option<String>,
    reps: usize,
    options: ContextOptions,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        only: None,
        json: None,
        reps: 0,
        options: ContextOptions::from_env(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => args.quick = true,
            "--json" => args.json = Some(value("--json")?),
            "--only" => args.only = Some(value("--only")?),
            "--reps" => {
                args.reps = value("--reps")?
                    .parse()
                    .map_err(|e| format!("--reps: {e}"))?
            }
            "--backend" => {
                let name = value("--backend")?;
                args.options.backends = Some(wgpu::Backends::from_comma_list(&name));
            }
            "--adapter" => args.options.adapter_name = Some(value("--adapter")?),
            "--help" | "-h" => {
                return Err("usage: bench [--quick] [--json FILE] [--reps N] [--only NxCxHxW] [--backend vulkan|gl|metal|dx12] [--adapter NAME]".into())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.reps == 0 {
        args.reps = if args.quick { 3 } else { 15 };
    }
    Ok(args)
}

fn flavor(shape: &[usize]) -> Flavor {
    Flavor::for_rank(shape.len()).expect("benchmark shapes have rank 2 to 5")
}

fn data(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2654435761).max(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 4.0 - 2.0
        })
        .collect()
}

type Timed<'a> = Box<dyn FnMut() -> wgpu_batchnorm::Result<f64> + 'a>;

/// Median time of `reps` runs of `op` after one warm-up, and the median of the ratios to a copy
/// run right before each: pairing keeps the ratio honest on a machine whose speed drifts.
fn measure(
    reps: usize,
    copy: &mut Timed<'_>,
    op: &mut Timed<'_>,
) -> wgpu_batchnorm::Result<(f64, f64)> {
    copy()?;
    op()?;
    let mut times = Vec::with_capacity(reps);
    let mut ratios = Vec::with_capacity(reps);
    for _ in 0..reps {
        let c = copy()?;
        let t = op()?;
        times.push(t);
        ratios.push(t / c);
    }
    Ok((median(&mut times), median(&mut ratios)))
}

fn bench_shape(
    ctx: &Context,
    timer: &GpuTimer,
    copy: &CopyKernel,
    shape: &[usize],
    reps: usize,
) -> wgpu_batchnorm::Result<Vec<Row>> {
    let numel: usize = shape.iter().product();
    let host = data(numel, 1);
    let x = Tensor::from_slice(ctx, &host, shape)?;
    let dy = Tensor::from_slice(ctx, &data(numel, 2), shape)?;
    let y = Tensor::empty(ctx, shape)?;
    let dx = Tensor::empty(ctx, shape)?;
    let c = shape[1];
    let gw = Tensor::empty(ctx, &[c])?;
    let gb = Tensor::empty(ctx, &[c])?;
    let mut bn = BatchNorm::new(ctx, flavor(shape), c, BatchNormOptions::default())?;

    let mut copy_run: Timed = Box::new(|| timer.time(ctx, |e| copy.encode(ctx, e, &x, &y)));
    let mut rows = Vec::new();
    let mut push = |op: &'static str, (ms, ratio): (f64, f64), bytes_per_element: f64| {
        rows.push(Row {
            shape: shape.to_vec(),
            op,
            median_ms: ms,
            gb_per_s: bytes_per_element * numel as f64 / (ms * 1e-3) / 1e9,
            copy_ratio: ratio,
        })
    };
    let mut copy_again: Timed = Box::new(|| timer.time(ctx, |e| copy.encode(ctx, e, &x, &y)));
    push("copy", measure(reps, &mut copy_run, &mut copy_again)?, 8.0);

    bn.train();
    bn.forward_into(&x, &y)?;
    let ops: [(&'static str, f64, bool); 3] = [
        ("train_forward", 12.0, true),
        ("train_backward", 20.0, true),
        ("eval_forward", 8.0, false),
    ];
    for (op, bytes, training) in ops {
        bn.set_training(training);
        let bn = &mut bn;
        let mut run: Timed = if op == "train_backward" {
            Box::new(|| {
                timer.time(ctx, |e| {
                    bn.encode_backward(e, &dy, &dx, Some(&gw), Some(&gb))
                })
            })
        } else {
            Box::new(|| timer.time(ctx, |e| bn.encode_forward(e, &x, &y)))
        };
        push(op, measure(reps, &mut copy_run, &mut run)?, bytes);
    }

    let mut upload: Timed = Box::new(|| {
        let start = Instant::now();
        x.write(ctx, &host)?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    });
    push("upload", measure(reps, &mut copy_run, &mut upload)?, 4.0);

    let mut sink = vec![0.0f32; numel];
    let mut readback: Timed = Box::new(|| {
        let start = Instant::now();
        y.read_into(ctx, &mut sink)?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    });
    push(
        "readback",
        measure(reps, &mut copy_run, &mut readback)?,
        4.0,
    );
    Ok(rows)
}

fn json(rows: &[Row], ctx: &Context) -> String {
    let a = ctx.adapter();
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "  {{\"shape\": {:?}, \"op\": \"{}\", \"median_ms\": {:.4}, \"gb_per_s\": {:.3}, \"copy_ratio\": {:.3}, \"adapter\": {:?}, \"backend\": \"{:?}\"}}",
                r.shape, r.op, r.median_ms, r.gb_per_s, r.copy_ratio, a.name, a.backend
            )
        })
        .collect();
    format!("[\n{}\n]\n", items.join(",\n"))
}

fn main() {
    env_logger::init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let ctx = match Context::with_options(args.options.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let timer = GpuTimer::new(&ctx);
    let copy = match CopyKernel::new(&ctx) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let a = ctx.adapter();
    println!(
        "adapter: {} | backend: {:?} | driver: {} | timing: {} | {} reps",
        a.name,
        a.backend,
        a.driver,
        timer.method(),
        args.reps
    );
    println!(
        "{:<22} {:<15} {:>11} {:>9} {:>10}",
        "shape", "op", "median ms", "GB/s", "vs copy"
    );
    let mut all = Vec::new();
    for shape in SHAPES {
        let name: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        if args.only.as_ref().is_some_and(|o| *o != name.join("x")) {
            continue;
        }
        match bench_shape(&ctx, &timer, &copy, shape, args.reps) {
            Ok(rows) => {
                for r in &rows {
                    let dims: Vec<String> = r.shape.iter().map(|d| d.to_string()).collect();
                    println!(
                        "{:<22} {:<15} {:>11.3} {:>9.2} {:>10.2}",
                        dims.join("x"),
                        r.op,
                        r.median_ms,
                        r.gb_per_s,
                        r.copy_ratio
                    );
                }
                all.extend(rows);
            }
            Err(e) => println!("{shape:?}: error: {e}"),
        }
    }
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, json(&all, &ctx)) {
            eprintln!("cannot write {path}: {e}");
            std::process::exit(1);
        }
    }
}
