//! Criterion benchmarks of the same operations as `examples/bench.rs`, for `cargo bench` users.
//! GPU work is timed with timestamp queries where the adapter has them (else wall clock around
//! submit + wait), through `iter_custom`. `examples/bench.rs` prints the copy-kernel ratios.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wgpu_batchnorm::bench::{CopyKernel, GpuTimer};
use wgpu_batchnorm::{BatchNorm, BatchNormOptions, Context, Flavor, Tensor};

const SHAPES: &[&[usize]] = &[&[32, 64, 56, 56], &[256, 1024], &[16, 3, 224, 224]];

fn flavor(shape: &[usize]) -> Flavor {
    Flavor::for_rank(shape.len()).expect("benchmark shapes have rank 2 to 5")
}

/// Total GPU time of `iters` runs of `work`.
fn gpu_time(
    ctx: &Context,
    timer: &GpuTimer,
    iters: u64,
    mut work: impl FnMut(&mut wgpu::CommandEncoder) -> wgpu_batchnorm::Result<()>,
) -> Duration {
    let ms: f64 = (0..iters)
        .map(|_| timer.time(ctx, &mut work).expect("GPU work"))
        .sum();
    Duration::from_secs_f64(ms * 1e-3)
}

fn benches(c: &mut Criterion) {
    let ctx = Context::new().expect("a GPU adapter");
    let timer = GpuTimer::new(&ctx);
    let copy = CopyKernel::new(&ctx).expect("copy kernel");
    for shape in SHAPES {
        let numel: usize = shape.iter().product();
        let host: Vec<f32> = (0..numel)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
            .collect();
        let x = Tensor::from_slice(&ctx, &host, shape).unwrap();
        let dy = Tensor::from_slice(&ctx, &host, shape).unwrap();
        let y = Tensor::empty(&ctx, shape).unwrap();
        let dx = Tensor::empty(&ctx, shape).unwrap();
        let mut bn =
            BatchNorm::new(&ctx, flavor(shape), shape[1], BatchNormOptions::default()).unwrap();
        let name: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let mut group = c.benchmark_group(name.join("x"));
        group.sample_size(10);
        group.throughput(Throughput::Bytes(numel as u64 * 4));
        group.bench_function("copy", |b| {
            b.iter_custom(|n| gpu_time(&ctx, &timer, n, |e| copy.encode(&ctx, e, &x, &y)))
        });
        group.bench_function("train_forward", |b| {
            bn.train();
            b.iter_custom(|n| gpu_time(&ctx, &timer, n, |e| bn.encode_forward(e, &x, &y)))
        });
        group.bench_function("train_backward", |b| {
            bn.train();
            bn.forward_with(&x).output(&y).run().map(drop).unwrap();
            b.iter_custom(|n| {
                gpu_time(&ctx, &timer, n, |e| {
                    bn.encode_backward(e, &dy, &dx, None, None)
                })
            })
        });
        group.bench_function("eval_forward", |b| {
            bn.eval();
            b.iter_custom(|n| gpu_time(&ctx, &timer, n, |e| bn.encode_forward(e, &x, &y)))
        });
        group.bench_function("upload", |b| {
            b.iter_custom(|n| {
                let start = Instant::now();
                for _ in 0..n {
                    x.write(&ctx, &host).unwrap();
                }
                start.elapsed()
            })
        });
        let mut sink = vec![0.0f32; numel];
        group.bench_function("readback", |b| {
            b.iter_custom(|n| {
                let start = Instant::now();
                for _ in 0..n {
                    y.read_into(&ctx, &mut sink).unwrap();
                }
                start.elapsed()
            })
        });
        group.finish();
    }
}

criterion_group!(benchmarks, benches);
criterion_main!(benchmarks);
