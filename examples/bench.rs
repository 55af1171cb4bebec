//! Benchmark: batch norm against a plain WGSL vec4 copy of the same tensor, in the same run.
//!
//! `cargo run --release --features bench --example bench [-- --quick] [--json FILE]
//! [--backend NAME] [--adapter NAME] [--reps N] [--only NxCxHxW|latency]
//! [--variant nchw|channels_last|residual|f16] [--pass-plan multi|workgroup|invocation]
//! [--profile cpu|gpu] [--plot FILE.svg] [--explain] [--network resnet50 [--batch N]]`
//!
//! `--plot FILE.svg` draws the run's ratios to the copy kernel: a group of bars per shape, a
//! bar per operation and variant, and the two-pass traffic model's limits as lines (eval 1.0,
//! training forward 1.5, training backward 2.5 copies; the residual epilogue adds 0.5 to each
//! forward and 1.0 to the backward).
//!
//! `--network resnet50 [--batch N]` (without `--explain`) times one training step of
//! ResNet-50's 53 batch-norm layers as a training loop records it (every forward, then every
//! backward in reverse, in one encoder): the CPU cost of recording per call, the step's device
//! time, and its ratio to copying every layer's activations once.
//! `--explain` times nothing: it prints each shape's plans (see `wgpu_batchnorm::planner`) on
//! the context's profile (`--profile` forces one), per dispatch its kernel, invocations,
//! workgroup size and items per invocation; with `--json FILE` as rows `{"shape", "layout",
//! "op", "profile", "pass_plan", "dispatches": [{"kernel", "invocations", "workgroup_size",
//! "items_per_invocation", "values_per_item", "reads_activation"}]}`. `--network resnet50`
//! explains the 53 batch-norm layers of torchvision's ResNet-50 (224 x 224, `--batch`, 8 by
//! default) instead of the bench shapes.
//!
//! For each shape and operation it prints the median time (GPU timestamps where the adapter has
//! them, else wall clock around submit + wait), the effective bandwidth under the two-pass
//! traffic model (training forward reads x twice and writes y: 12 bytes per element; eval
//! forward 8; training backward reads x and dy twice and writes dx: 20; upload and readback 4),
//! and the ratio of its time to the copy kernel's (8 bytes per element): the median of the
//! ratios to a copy of the same tensor timed right before each run. Beside it, the ratio to a
//! second floor, the stream kernel (`y = x` through the crate's own walk and item width: one
//! read and one write per element in its best access pattern), timed in the same pairs.
//!
//! Last, the wall-clock latency of the blocking calls on small tensors: a training forward
//! (submit + wait), the same with the output read back, and a backward.
//!
//! Each shape is also run channels-last (`layout`, where it has a spatial extent) and with the
//! fused `relu(bn(x) + residual)` epilogue (`epilogue`; its traffic model adds 4 bytes per
//! element to each forward for the residual read, and 8 to the backward for the residual read
//! and grad_residual written). `--json FILE` rows carry `dtype`, `layout` and `epilogue`.

use std::time::Instant;

use wgpu_batchnorm::bench::{median, CopyKernel, GpuTimer, StreamKernel};
use wgpu_batchnorm::planner::{
    resnet50_batchnorm_shapes, CallDesc, CallKind, CallPlan, BENCH_SHAPES,
};
use wgpu_batchnorm::profile::ProfileKind;
use wgpu_batchnorm::{
    Activation, BatchNorm, BatchNormOptions, Context, ContextOptions, DType, Flavor, GradOutputs,
    MemoryFormat, PassPlan, Saved, Tensor,
};

const SHAPES: &[&[usize]] = BENCH_SHAPES;

/// The variants each shape runs (`--variant` picks one).
const VARIANTS: &[&str] = &["nchw", "channels_last", "residual", "f16"];

struct Row {
    shape: Vec<usize>,
    op: &'static str,
    /// "nchw" or "channels_last".
    layout: &'static str,
    /// "none" or "relu+residual".
    epilogue: &'static str,
    /// "f32" or "f16".
    dtype: &'static str,
    median_ms: f64,
    gb_per_s: f64,
    copy_ratio: f64,
    /// The ratio to the stream kernel (the second floor).
    floor_ratio: f64,
}

struct Args {
    quick: bool,
    only: Option<String>,
    /// Runs only this variant: nchw, channels_last, residual or f16.
    variant: Option<String>,
    json: Option<String>,
    reps: usize,
    options: ContextOptions,
    /// Prints each shape's plans instead of timing them.
    explain: bool,
    /// `--network resnet50`: the network's batch-norm layers instead of the bench shapes.
    network: Option<String>,
    /// The network's batch size.
    batch: usize,
    /// `--plot FILE.svg`: the run's copy ratios as a chart.
    plot: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        only: None,
        variant: None,
        json: None,
        reps: 0,
        options: ContextOptions::from_env(),
        explain: false,
        network: None,
        batch: 8,
        plot: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => args.quick = true,
            "--json" => args.json = Some(value("--json")?),
            "--only" => args.only = Some(value("--only")?),
            "--variant" => {
                let v = value("--variant")?;
                if !VARIANTS.contains(&v.as_str()) {
                    return Err(format!("--variant {v}: one of {}", VARIANTS.join(", ")));
                }
                args.variant = Some(v);
            }
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
            "--explain" => args.explain = true,
            "--plot" => args.plot = Some(value("--plot")?),
            "--profile" => {
                let v = value("--profile")?;
                args.options.profile = Some(v.parse::<ProfileKind>().map_err(|e| e.to_string())?);
            }
            "--network" => {
                let v = value("--network")?;
                if v != "resnet50" {
                    return Err(format!("--network {v}: only resnet50"));
                }
                args.network = Some(v);
            }
            "--batch" => {
                args.batch = value("--batch")?
                    .parse()
                    .map_err(|e| format!("--batch: {e}"))?
            }
            // Pins the training forward's path (the default picks per shape), to compare them.
            "--pass-plan" => {
                args.options.forced.pass_plan = Some(match value("--pass-plan")?.as_str() {
                    "multi" => PassPlan::MultiPass,
                    "workgroup" => PassPlan::WorkgroupPerChannel,
                    "invocation" => PassPlan::InvocationPerChannel,
                    other => return Err(format!("--pass-plan {other}: multi, workgroup or invocation")),
                })
            }
            "--help" | "-h" => {
                return Err("usage: bench [--quick] [--json FILE] [--reps N] [--only NxCxHxW|latency] [--variant nchw|channels_last|residual|f16] [--backend vulkan|gl|metal|dx12] [--adapter NAME] [--pass-plan multi|workgroup|invocation] [--plot FILE.svg] [--profile cpu|gpu] [--explain] [--network resnet50 [--batch N]]".into())
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

/// The two floors an operation is compared with: the copy kernel and the stream kernel, on the
/// same bytes.
struct Floors<'a> {
    copy: Timed<'a>,
    stream: Timed<'a>,
}

/// Median time of `reps` runs of `op` after one warm-up, and the medians of its ratios to a
/// copy and a stream run right before each: pairing keeps the ratios honest on a machine whose
/// speed drifts.
fn measure(
    reps: usize,
    floors: &mut Floors<'_>,
    op: &mut Timed<'_>,
) -> wgpu_batchnorm::Result<(f64, f64, f64)> {
    (floors.copy)()?;
    (floors.stream)()?;
    op()?;
    let mut times = Vec::with_capacity(reps);
    let mut to_copy = Vec::with_capacity(reps);
    let mut to_stream = Vec::with_capacity(reps);
    // Each ratio from an op run right after its floor's run, as the copy ratio was measured
    // before the stream floor existed: what ran just before a kernel changes its time on
    // lavapipe (caches, the worker threads' state) by several percent.
    for _ in 0..reps {
        let c = (floors.copy)()?;
        let t = op()?;
        let f = (floors.stream)()?;
        let u = op()?;
        times.push(t);
        times.push(u);
        to_copy.push(t / c);
        to_stream.push(u / f);
    }
    Ok((
        median(&mut times),
        median(&mut to_copy),
        median(&mut to_stream),
    ))
}

/// The floors for `x` and `y`, in closures that own their tensors.
fn floors<'a>(
    ctx: &'a Context,
    timer: &'a GpuTimer,
    (copy, stream): (&'a CopyKernel, &'a StreamKernel),
    x: &Tensor,
    y: &Tensor,
) -> Floors<'a> {
    let (cx, cy, sx, sy) = (x.clone(), y.clone(), x.clone(), y.clone());
    Floors {
        copy: Box::new(move || timer.time(ctx, |e| copy.encode(ctx, e, &cx, &cy))),
        stream: Box::new(move || timer.time(ctx, |e| stream.encode(e, &sx, &sy))),
    }
}

fn bench_shape(
    ctx: &Context,
    timer: &GpuTimer,
    kernels: (&CopyKernel, &StreamKernel),
    shape: &[usize],
    reps: usize,
    only_variant: Option<&str>,
) -> wgpu_batchnorm::Result<Vec<Row>> {
    let numel: usize = shape.iter().product();
    let host = data(numel, 1);
    let x = Tensor::from_slice(ctx, &host, shape)?;
    let y = Tensor::empty(ctx, shape)?;
    let mut base_floors = floors(ctx, timer, kernels, &x, &y);
    let mut rows = Vec::new();
    let mut push = |op: &'static str,
                    (layout, epilogue, dtype): (&'static str, &'static str, &'static str),
                    (ms, ratio, floor_ratio): (f64, f64, f64),
                    bytes_per_element: f64| {
        rows.push(Row {
            shape: shape.to_vec(),
            op,
            layout,
            epilogue,
            dtype,
            median_ms: ms,
            gb_per_s: bytes_per_element * numel as f64 / (ms * 1e-3) / 1e9,
            copy_ratio: ratio,
            floor_ratio,
        })
    };
    let base = ("nchw", "none", "f32");
    let (copy, stream) = kernels;
    let mut copy_again: Timed = Box::new(|| timer.time(ctx, |e| copy.encode(ctx, e, &x, &y)));
    push(
        "copy",
        base,
        measure(reps, &mut base_floors, &mut copy_again)?,
        8.0,
    );
    let mut stream_again: Timed = Box::new(|| timer.time(ctx, |e| stream.encode(e, &x, &y)));
    push(
        "stream",
        base,
        measure(reps, &mut base_floors, &mut stream_again)?,
        8.0,
    );

    // The plain module; channels-last (where it differs: a spatial extent); the fused ResNet
    // tail relu(bn(x) + residual), whose traffic adds one residual read to each forward and,
    // in the backward, the residual read and grad_residual written once.
    // f16 activations (their ratios are to a copy of the same f16 bytes, their traffic model
    // half the f32 one).
    let mut variants = vec![(MemoryFormat::Contiguous, false, DType::F32)];
    if shape.len() > 2 {
        variants.push((MemoryFormat::ChannelsLast, false, DType::F32));
    }
    variants.push((MemoryFormat::Contiguous, true, DType::F32));
    variants.push((MemoryFormat::Contiguous, false, DType::F16));
    for (format, fused, dtype) in variants {
        let layout = match format {
            MemoryFormat::ChannelsLast => "channels_last",
            _ => "nchw",
        };
        let f16 = dtype == DType::F16;
        let variant = match (layout, fused, f16) {
            (_, _, true) => "f16",
            (_, true, _) => "residual",
            (layout, ..) => layout,
        };
        if only_variant.is_some_and(|v| v != variant) {
            continue;
        }
        let label = (
            layout,
            if fused { "relu+residual" } else { "none" },
            if f16 { "f16" } else { "f32" },
        );
        let t = |seed: u32| {
            let v = data(numel, seed);
            let t = if f16 {
                Tensor::from_f32_as_f16(ctx, &v, shape)
            } else {
                Tensor::from_slice(ctx, &v, shape)
            };
            t.map(|t| t.with_memory_format(format))
        };
        let (x, dy, residual) = (t(1)?, t(2)?, t(3)?);
        let (y, dx, gr) = (t(0)?, t(0)?, t(0)?);
        let c = shape[1];
        let gw = Tensor::empty(ctx, &[c])?;
        let gb = Tensor::empty(ctx, &[c])?;
        let mut bn = BatchNorm::new(ctx, flavor(shape), c, BatchNormOptions::default())?;
        if fused {
            bn.set_activation(Activation::Relu);
        }
        let extra = if fused { 4.0 } else { 0.0 };
        let scale = if f16 { 0.5 } else { 1.0 };
        let ops: [(&'static str, f64, bool); 3] = [
            ("train_forward", (12.0 + extra) * scale, true),
            ("train_backward", (20.0 + 2.0 * extra) * scale, true),
            ("eval_forward", (8.0 + extra) * scale, false),
        ];
        // The f16 floors: a copy and a stream of the same f16 bytes (NCHW).
        let (cx, cy) = (
            t(4)?.with_memory_format(MemoryFormat::Contiguous),
            t(0)?.with_memory_format(MemoryFormat::Contiguous),
        );
        let mut same_floors = floors(ctx, timer, kernels, &cx, &cy);
        if f16 {
            let mut again: Timed = Box::new(|| timer.time(ctx, |e| copy.encode(ctx, e, &cx, &cy)));
            push(
                "copy",
                label,
                measure(reps, &mut same_floors, &mut again)?,
                4.0,
            );
        }
        for (op, bytes, training) in ops {
            bn.set_training(training);
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            let saved = encode_forward(&mut bn, &mut encoder, &x, fused.then_some(&residual), &y)?;
            ctx.queue().submit(Some(encoder.finish()));
            let bn = &mut bn;
            let mut run: Timed = if op == "train_backward" {
                Box::new(|| {
                    timer.time(ctx, |e| {
                        let outputs = GradOutputs {
                            grad_input: Some(&dx),
                            grad_weight: Some(&gw),
                            grad_bias: Some(&gb),
                            grad_residual: fused.then_some(&gr),
                        };
                        bn.backward_with(&dy)
                            .saved(&saved)
                            .outputs(outputs)
                            .encode(e)
                    })
                })
            } else {
                Box::new(|| {
                    timer.time(ctx, |e| {
                        encode_forward(bn, e, &x, fused.then_some(&residual), &y).map(|_| ())
                    })
                })
            };
            let baseline = if f16 {
                &mut same_floors
            } else {
                &mut base_floors
            };
            push(op, label, measure(reps, baseline, &mut run)?, bytes);
        }
    }

    let mut upload: Timed = Box::new(|| {
        let start = Instant::now();
        x.write(ctx, &host)?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    });
    push(
        "upload",
        base,
        measure(reps, &mut base_floors, &mut upload)?,
        4.0,
    );

    let mut sink = vec![0.0f32; numel];
    let mut readback: Timed = Box::new(|| {
        let start = Instant::now();
        y.read_into(ctx, &mut sink)?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    });
    push(
        "readback",
        base,
        measure(reps, &mut base_floors, &mut readback)?,
        4.0,
    );
    Ok(rows)
}

/// One latency measurement: a blocking call's median wall-clock time.
struct Latency {
    shape: Vec<usize>,
    op: &'static str,
    median_ms: f64,
}

type Call<'a> = Box<dyn FnMut(&mut BatchNorm) -> wgpu_batchnorm::Result<()> + 'a>;

/// Wall-clock latency of the blocking calls on small tensors, where the fixed costs (submit,
/// wait, staging, mapping) are all there is: what an interactive caller waits per call.
fn latency(ctx: &Context, reps: usize) -> wgpu_batchnorm::Result<Vec<Latency>> {
    let mut out = Vec::new();
    for shape in [vec![4usize, 3], vec![64, 256]] {
        let numel: usize = shape.iter().product();
        let x = Tensor::from_slice(ctx, &data(numel, 5), &shape)?;
        let dy = Tensor::from_slice(ctx, &data(numel, 6), &shape)?;
        let host = data(numel, 7);
        let mut bn = BatchNorm::new(ctx, flavor(&shape), shape[1], BatchNormOptions::default())?;
        let calls: [(&'static str, Call<'_>); 5] = [
            (
                "train_forward (submit + wait)",
                Box::new(|bn| bn.forward(&x).map(|_| ())),
            ),
            (
                "train_forward + readback",
                Box::new(|bn| bn.forward(&x)?.to_host().map(|_| ())),
            ),
            (
                "train_backward (submit + wait)",
                Box::new(|bn| bn.backward(&dy).map(|_| ())),
            ),
            (
                "eval_forward + readback",
                Box::new(|bn| {
                    bn.eval();
                    let y = bn.forward(&x)?.to_host();
                    bn.train();
                    y.map(|_| ())
                }),
            ),
            (
                "upload (Tensor::from_slice)",
                Box::new(|_| Tensor::from_slice(ctx, &host, &shape).map(|_| ())),
            ),
        ];
        bn.forward(&x)?;
        for (op, mut call) in calls {
            for _ in 0..3 {
                call(&mut bn)?;
            }
            let mut times: Vec<f64> = (0..reps.max(1) * 4)
                .map(|_| {
                    let start = Instant::now();
                    call(&mut bn).map(|_| start.elapsed().as_secs_f64() * 1e3)
                })
                .collect::<wgpu_batchnorm::Result<_>>()?;
            out.push(Latency {
                shape: shape.clone(),
                op,
                median_ms: median(&mut times),
            });
        }
    }
    Ok(out)
}

/// Records a forward with or without a residual, returning its saved state.
fn encode_forward(
    bn: &mut BatchNorm,
    encoder: &mut wgpu::CommandEncoder,
    x: &Tensor,
    residual: Option<&Tensor>,
    y: &Tensor,
) -> wgpu_batchnorm::Result<Saved> {
    let (_, saved) = bn
        .forward_with(x)
        .residual(residual)
        .output(y)
        .encode(encoder)?;
    Ok(saved)
}

fn json(rows: &[Row], latencies: &[Latency], ctx: &Context) -> String {
    let a = ctx.adapter();
    let latency_items = latencies.iter().map(|l| {
        format!(
            "  {{\"shape\": {:?}, \"op\": \"latency: {}\", \"dtype\": \"f32\", \"layout\": \"nchw\", \"epilogue\": \"none\", \"median_ms\": {:.4}, \"adapter\": {:?}, \"backend\": \"{:?}\"}}",
            l.shape, l.op, l.median_ms, a.name, a.backend
        )
    });
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "  {{\"shape\": {:?}, \"op\": \"{}\", \"dtype\": \"{}\", \"layout\": \"{}\", \"epilogue\": \"{}\", \"median_ms\": {:.4}, \"gb_per_s\": {:.3}, \"copy_ratio\": {:.3}, \"floor_ratio\": {:.3}, \"adapter\": {:?}, \"backend\": \"{:?}\"}}",
                r.shape, r.op, r.dtype, r.layout, r.epilogue, r.median_ms, r.gb_per_s, r.copy_ratio, r.floor_ratio, a.name, a.backend
            )
        })
        .chain(latency_items)
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
    if args.network.is_some() && !args.explain {
        if let Err(e) = network(&ctx, args.batch, args.reps) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.explain {
        let shapes: Vec<Vec<usize>> = match &args.network {
            Some(_) => resnet50_batchnorm_shapes(args.batch)
                .iter()
                .map(|s| s.to_vec())
                .collect(),
            None => SHAPES.iter().map(|s| s.to_vec()).collect(),
        };
        explain(&ctx, &shapes, args.json.as_deref());
        return;
    }
    let timer = GpuTimer::new(&ctx);
    let copy = match CopyKernel::new(&ctx) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let stream = StreamKernel::new(&ctx);
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
        "{:<22} {:<15} {:<5} {:<14} {:<14} {:>11} {:>9} {:>8} {:>9}",
        "shape", "op", "dtype", "layout", "epilogue", "median ms", "GB/s", "vs copy", "vs floor"
    );
    let mut all = Vec::new();
    // `--only NxC...` runs that shape, listed or not.
    let only: Option<Vec<usize>> = args
        .only
        .as_deref()
        .and_then(|o| o.split('x').map(|d| d.parse().ok()).collect());
    let shapes: Vec<&[usize]> = match &only {
        Some(shape) => vec![shape.as_slice()],
        None if args.only.is_some() => Vec::new(),
        None => SHAPES.to_vec(),
    };
    let total = shapes.len();
    for (i, shape) in shapes.into_iter().enumerate() {
        eprintln!("bench: shape {}/{total} {shape:?}", i + 1);
        match bench_shape(
            &ctx,
            &timer,
            (&copy, &stream),
            shape,
            args.reps,
            args.variant.as_deref(),
        ) {
            Ok(rows) => {
                for r in &rows {
                    let dims: Vec<String> = r.shape.iter().map(|d| d.to_string()).collect();
                    println!(
                        "{:<22} {:<15} {:<5} {:<14} {:<14} {:>11.3} {:>9.2} {:>8.2} {:>9.2}",
                        dims.join("x"),
                        r.op,
                        r.dtype,
                        r.layout,
                        r.epilogue,
                        r.median_ms,
                        r.gb_per_s,
                        r.copy_ratio,
                        r.floor_ratio
                    );
                }
                all.extend(rows);
            }
            Err(e) => println!("{shape:?}: error: {e}"),
        }
    }
    // The latency section runs in a full run, or alone with `--only latency`.
    let latency_wanted = match args.only.as_deref() {
        Some(only) => only == "latency",
        None => args.variant.is_none(),
    };
    let latencies = if latency_wanted {
        match latency(&ctx, args.reps) {
            Ok(l) => l,
            Err(e) => {
                println!("latency: error: {e}");
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    if !latencies.is_empty() {
        println!(
            "\nlatency of the blocking calls (wall clock, median of {} calls):",
            args.reps.max(1) * 4
        );
        for l in &latencies {
            let dims: Vec<String> = l.shape.iter().map(|d| d.to_string()).collect();
            println!(
                "{:<10} {:<32} {:>9.1} us",
                dims.join("x"),
                l.op,
                l.median_ms * 1e3
            );
        }
    }
    if let Some(path) = &args.plot {
        if let Err(e) = plot(&all, path, &ctx) {
            eprintln!("cannot plot to {path}: {e}");
            std::process::exit(1);
        }
    }
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, json(&all, &latencies, &ctx)) {
            eprintln!("cannot write {path}: {e}");
            std::process::exit(1);
        }
    }
}

/// `--explain`: each shape's plans on this context's profile and limits (NCHW and, with a
/// spatial extent, channels-last; training forward, training backward, eval forward), printed,
/// and with `--json FILE` one row per shape, layout and operation.
fn explain(ctx: &Context, shapes: &[Vec<usize>], json_path: Option<&str>) {
    println!(
        "adapter: {} | profile: {}",
        ctx.adapter().name,
        ctx.profile()
    );
    let mut rows = Vec::new();
    for shape in shapes {
        let layouts: &[&str] = if shape.len() > 2 {
            &["nchw", "channels_last"]
        } else {
            &["nchw"]
        };
        for &layout in layouts {
            for kind in CallKind::ALL {
                let mut desc = CallDesc::nchw(shape, DType::F32, kind);
                if layout == "channels_last" {
                    desc = desc.channels_last();
                }
                let plan = ctx.plan_call(&desc);
                println!("{shape:?} {layout}: {plan}");
                rows.push(explain_row(shape, layout, &plan, ctx));
            }
        }
    }
    if let Some(path) = json_path {
        let text = format!("[\n{}\n]\n", rows.join(",\n"));
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("cannot write {path}: {e}");
            std::process::exit(1);
        }
    }
}

fn explain_row(shape: &[usize], layout: &str, plan: &CallPlan, ctx: &Context) -> String {
    let dispatches: Vec<String> = plan
        .dispatches
        .iter()
        .map(|d| {
            format!(
                "{{\"kernel\": {:?}, \"invocations\": {}, \"workgroup_size\": {}, \"items_per_invocation\": {}, \"values_per_item\": {}, \"reads_activation\": {}}}",
                d.kernel,
                d.invocations,
                d.workgroup_size,
                d.items_per_invocation,
                d.values_per_item,
                d.reads_activation
            )
        })
        .collect();
    let profile = match ctx.profile().kind {
        ProfileKind::Cpu => "cpu",
        _ => "gpu",
    };
    format!(
        "  {{\"shape\": {shape:?}, \"layout\": {layout:?}, \"op\": {:?}, \"profile\": {profile:?}, \"pass_plan\": \"{:?}\", \"dispatches\": [{}]}}",
        plan.desc.kind.to_string(),
        plan.pass_plan,
        dispatches.join(", ")
    )
}

/// One batch-norm layer of the network step, with its activations and gradients.
struct Layer {
    bn: BatchNorm,
    x: Tensor,
    y: Tensor,
    dy: Tensor,
    dx: Tensor,
    gw: Tensor,
    gb: Tensor,
}

impl Layer {
    /// Records the training forward, as a training loop does.
    fn forward(&mut self, encoder: &mut wgpu::CommandEncoder) -> wgpu_batchnorm::Result<Saved> {
        let call = self.bn.forward_with(&self.x).output(&self.y);
        Ok(call.encode(encoder)?.1)
    }

    /// Records the backward of `saved` into the layer's gradients.
    fn backward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        saved: &Saved,
    ) -> wgpu_batchnorm::Result<()> {
        let outputs = GradOutputs {
            grad_input: Some(&self.dx),
            grad_weight: Some(&self.gw),
            grad_bias: Some(&self.gb),
            grad_residual: None,
        };
        self.bn
            .backward_with(&self.dy)
            .saved(saved)
            .outputs(outputs)
            .encode(encoder)
    }
}

/// `--network resnet50`: one training step of ResNet-50's 53 batch-norm layers at `batch`, as a
/// training loop records it: every layer's training forward, then every backward in reverse,
/// into one encoder. Reports the CPU cost of recording per call (median over the steps after
/// the first), the step's device time, and its ratio to copying every layer's activations once
/// in the same run (the copies also in one encoder).
fn network(ctx: &Context, batch: usize, reps: usize) -> wgpu_batchnorm::Result<()> {
    let shapes = resnet50_batchnorm_shapes(batch);
    let timer = GpuTimer::new(ctx);
    let copy = CopyKernel::new(ctx)?;
    eprintln!(
        "network: uploading {} layers at batch {batch}",
        shapes.len()
    );
    let mut layers = Vec::new();
    for (i, shape) in shapes.iter().enumerate() {
        let numel: usize = shape.iter().product();
        let c = shape[1];
        let host = data(numel, 11 + i as u32);
        layers.push(Layer {
            bn: BatchNorm::new(ctx, flavor(shape), c, BatchNormOptions::default())?,
            x: Tensor::from_slice(ctx, &host, shape)?,
            y: Tensor::empty(ctx, shape)?,
            dy: Tensor::from_slice(ctx, &host, shape)?,
            dx: Tensor::empty(ctx, shape)?,
            gw: Tensor::empty(ctx, &[c])?,
            gb: Tensor::empty(ctx, &[c])?,
        });
    }
    let steps = reps.max(3) + 1;
    let (mut forward_us, mut backward_us, mut step_ms, mut copy_ms) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for step in 0..steps {
        eprintln!("network: step {}/{steps}", step + 1);
        let mut f_us = Vec::new();
        let mut b_us = Vec::new();
        let t = timer.time(ctx, |encoder| {
            let mut saved = Vec::with_capacity(layers.len());
            for l in layers.iter_mut() {
                let start = Instant::now();
                saved.push(l.forward(encoder)?);
                f_us.push(start.elapsed().as_secs_f64() * 1e6);
            }
            for (l, s) in layers.iter_mut().zip(&saved).rev() {
                let start = Instant::now();
                l.backward(encoder, s)?;
                b_us.push(start.elapsed().as_secs_f64() * 1e6);
            }
            Ok(())
        })?;
        let c = timer.time(ctx, |encoder| {
            for l in &layers {
                copy.encode(ctx, encoder, &l.x, &l.y)?;
            }
            Ok(())
        })?;
        if step > 0 {
            forward_us.push(median(&mut f_us));
            backward_us.push(median(&mut b_us));
            step_ms.push(t);
            copy_ms.push(c);
        }
    }
    // Recording alone, into encoders that are dropped unsubmitted: no device work runs
    // beside it, so the per-call cost is the host's alone.
    let (mut forward_only, mut backward_only) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        let mut saved = Vec::with_capacity(layers.len());
        let start = Instant::now();
        for l in layers.iter_mut() {
            saved.push(l.forward(&mut encoder)?);
        }
        forward_only.push(start.elapsed().as_secs_f64() * 1e6 / layers.len() as f64);
        let start = Instant::now();
        for (l, s) in layers.iter_mut().zip(&saved).rev() {
            l.backward(&mut encoder, s)?;
        }
        backward_only.push(start.elapsed().as_secs_f64() * 1e6 / layers.len() as f64);
    }
    let ratios: Vec<f64> = step_ms.iter().zip(&copy_ms).map(|(t, c)| t / c).collect();
    let a = ctx.adapter();
    println!(
        "adapter: {} | backend: {:?} | profile: {} | timing: {}",
        a.name,
        a.backend,
        ctx.profile(),
        timer.method()
    );
    println!(
        "resnet50 batch {batch}, {} batch-norm layers, {} steps after the first:",
        shapes.len(),
        step_ms.len()
    );
    println!(
        "  recording per call: forward {:.1} us, backward {:.1} us (median of per-step medians)",
        median(&mut forward_us),
        median(&mut backward_us)
    );
    println!(
        "  recording alone (20 steps into dropped encoders): forward {:.1} us, backward {:.1} us per call (medians)",
        median(&mut forward_only),
        median(&mut backward_only)
    );
    println!(
        "  step device time {:.3} ms; copying every layer's activations once {:.3} ms; step / copies {:.2}",
        median(&mut step_ms),
        median(&mut copy_ms),
        median(&mut ratios.clone())
    );
    Ok(())
}

/// `--plot`: the copy ratios of `rows` as an SVG bar chart.
fn plot(rows: &[Row], path: &str, ctx: &Context) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.op.starts_with("train") || r.op.starts_with("eval"))
        .collect();
    // Bars in groups of one shape; series are (op, layout, epilogue, dtype).
    let mut shapes: Vec<&[usize]> = Vec::new();
    let mut series: Vec<String> = Vec::new();
    for r in &rows {
        if !shapes.contains(&r.shape.as_slice()) {
            shapes.push(&r.shape);
        }
        let name = format!("{} {} {} {}", r.op, r.layout, r.epilogue, r.dtype);
        if !series.contains(&name) {
            series.push(name);
        }
    }
    let per_group = series.len().max(1) as f64 + 1.0;
    let width = (shapes.len() as f64 * per_group).max(1.0);
    // Room above the bars for the legend, below them for the shapes' names.
    let top = rows.iter().map(|r| r.copy_ratio).fold(3.0f64, f64::max) * 1.6;
    let bottom = -top * 0.05;
    let root = SVGBackend::new(path, (1400, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "batch norm / copy kernel, {} ({})",
        ctx.adapter().name,
        ctx.profile()
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(10)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..width, bottom..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("time / copy time")
        .draw()?;
    chart.draw_series(shapes.iter().enumerate().map(|(g, s)| {
        let name = s
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        let x = g as f64 * per_group + 0.5;
        Text::new(name, (x, bottom * 0.3), ("sans-serif", 14))
    }))?;
    for (k, name) in series.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let bars: Vec<_> = rows
            .iter()
            .filter(|r| &format!("{} {} {} {}", r.op, r.layout, r.epilogue, r.dtype) == name)
            .filter_map(|r| {
                let group = shapes.iter().position(|s| *s == r.shape.as_slice())?;
                let x = group as f64 * per_group + k as f64 + 0.5;
                Some(Rectangle::new(
                    [(x, 0.0), (x + 0.9, r.copy_ratio)],
                    color.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    for (limit, what) in [
        (1.0, "eval limit (1 copy)"),
        (1.5, "training forward limit"),
        (2.5, "training backward limit"),
    ] {
        chart
            .draw_series(LineSeries::new(
                [(0.0, limit), (width, limit)],
                BLACK.stroke_width(1),
            ))?
            .label(what)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}
