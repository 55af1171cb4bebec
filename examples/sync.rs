//! SyncBN on one machine: one batch split across two contexts (lavapipe and GL where both
//! exist, else two lavapipe devices), statistics and backward sums exchanged through the host,
//! against the whole batch on one device.
//!
//! `cargo run --release --example sync`

use wgpu_batchnorm::sync::{backward_coefficients, merge_stats, merge_sums};
use wgpu_batchnorm::{
    BackwardArgs, BatchNormOptions, Context, ContextOptions, ForwardArgs, Functional, SavedStats,
    Tensor,
};

/// One device and its share of the batch.
struct Shard {
    ctx: Context,
    f: Functional,
    x: Tensor,
    dy: Tensor,
}

fn main() -> wgpu_batchnorm::Result<()> {
    let (n, c, s) = (8usize, 4usize, 10usize);
    let x: Vec<f32> = (0..n * c * s)
        .map(|i| ((i * 37 % 101) as f32 * 0.1).sin() * 2.0 + (i % c) as f32)
        .collect();
    let dy: Vec<f32> = (0..n * c * s)
        .map(|i| ((i * 11 % 13) as f32 - 6.0) * 0.1)
        .collect();
    let eps = BatchNormOptions::default().eps;
    let gl = Context::with_options(ContextOptions {
        backends: Some(wgpu::Backends::GL),
        ..ContextOptions::default()
    });
    let second = match gl {
        Ok(ctx) => ctx,
        Err(_) => Context::with_options(ContextOptions {
            disable_subgroups: true,
            ..ContextOptions::from_env()
        })?,
    };
    let per = c * s;
    let mut shards = Vec::new();
    for (ctx, (a, b)) in [Context::new()?, second].into_iter().zip([(0, 3), (3, n)]) {
        println!("samples {a}..{b} on {}", ctx.adapter());
        let shape = [b - a, c, s];
        shards.push(Shard {
            f: Functional::new(&ctx),
            x: Tensor::from_slice(&ctx, &x[a * per..b * per], &shape)?,
            dy: Tensor::from_slice(&ctx, &dy[a * per..b * per], &shape)?,
            ctx,
        });
    }
    let locals = shards
        .iter_mut()
        .map(|d| d.f.local_stats(&d.x))
        .collect::<wgpu_batchnorm::Result<Vec<_>>>()?;
    let merged = merge_stats(&locals, eps)?;
    let (mut ys, mut sums, mut ups) = (Vec::new(), Vec::new(), Vec::new());
    for d in &mut shards {
        let up = merged.upload(&d.ctx)?;
        let y = Tensor::empty(&d.ctx, d.x.shape())?;
        d.f.run(&ForwardArgs {
            global_stats: Some(up.global()),
            ..ForwardArgs::new(&d.x, &y)
        })?;
        ys.extend(y.to_host()?);
        let (gw, gb) = (Tensor::empty(&d.ctx, &[c])?, Tensor::empty(&d.ctx, &[c])?);
        let stats = SavedStats::Batch {
            save_mean: up.mean(),
            save_invstd: up.invstd(),
        };
        d.f.run(&BackwardArgs {
            stats,
            grad_weight: Some(&gw),
            grad_bias: Some(&gb),
            ..BackwardArgs::new(&d.x, &d.dy)
        })?;
        sums.push((gw.to_host()?, gb.to_host()?));
        ups.push(up);
    }
    let (gw, gb) = merge_sums(&sums)?;
    let coef = backward_coefficients(&gw, &gb, merged.count);
    let mut dxs = Vec::new();
    for (d, up) in shards.iter_mut().zip(&ups) {
        let k = Tensor::from_slice(&d.ctx, &coef, &[2 * c])?;
        let dx = Tensor::empty(&d.ctx, d.x.shape())?;
        d.f.run(&BackwardArgs {
            stats: SavedStats::Batch {
                save_mean: up.mean(),
                save_invstd: up.invstd(),
            },
            grad_input: Some(&dx),
            global_coefficients: Some(&k),
            ..BackwardArgs::new(&d.x, &d.dy)
        })?;
        dxs.extend(dx.to_host()?);
    }

    // The whole batch on the first device.
    let ctx = &shards[0].ctx;
    let mut f = Functional::new(ctx);
    let (xt, dyt) = (
        Tensor::from_slice(ctx, &x, &[n, c, s])?,
        Tensor::from_slice(ctx, &dy, &[n, c, s])?,
    );
    let (y, mean, invstd) = (
        Tensor::empty(ctx, &[n, c, s])?,
        Tensor::empty(ctx, &[c])?,
        Tensor::empty(ctx, &[c])?,
    );
    f.run(&ForwardArgs {
        save_mean: Some(&mean),
        save_invstd: Some(&invstd),
        ..ForwardArgs::new(&xt, &y)
    })?;
    let (dx, gw1, gb1) = (
        Tensor::empty(ctx, &[n, c, s])?,
        Tensor::empty(ctx, &[c])?,
        Tensor::empty(ctx, &[c])?,
    );
    f.run(&BackwardArgs {
        stats: SavedStats::Batch {
            save_mean: &mean,
            save_invstd: &invstd,
        },
        grad_input: Some(&dx),
        grad_weight: Some(&gw1),
        grad_bias: Some(&gb1),
        ..BackwardArgs::new(&xt, &dyt)
    })?;
    let diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max)
    };
    let report = [
        ("output", diff(&ys, &y.to_host()?)),
        ("grad_input", diff(&dxs, &dx.to_host()?)),
        ("grad_weight", diff(&gw, &gw1.to_host()?)),
        ("grad_bias", diff(&gb, &gb1.to_host()?)),
    ];
    for (field, d) in report {
        println!("{field}: max |split - whole| = {d:.3e}");
    }
    if report.iter().any(|(_, d)| *d > 1e-4) {
        eprintln!("the split batch differs from the whole batch");
        std::process::exit(1);
    }
    Ok(())
}
