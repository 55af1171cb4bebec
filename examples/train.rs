//! Training a BatchNorm's affine parameters on the GPU: a student `BatchNorm1d` learns the
//! weight and bias of a teacher from the teacher's outputs, with SGD (momentum 0.3) for 300
//! steps. The loss gradient comes from the fused residual: `bn(x) + (-target)` is `y - target`,
//! the gradient of `0.5 * |y - target|^2`, so forward, backward and step all stay on the GPU;
//! the loss is read back only to print it (every 25 steps). Checks that those readings
//! decrease monotonically and that
//! the final parameters match the same steps in f64 on the host.
//!
//! `cargo run --release --example train`

use wgpu_batchnorm::optim::{Sgd, SgdOptions};
use wgpu_batchnorm::reference::{batch_stats, sgd_step};
use wgpu_batchnorm::{BatchNorm1d, Context, Tensor};

fn main() -> wgpu_batchnorm::Result<()> {
    let ctx = Context::new()?;
    let (n, c, l) = (16usize, 4usize, 8usize);
    let shape = [n, c, l];
    let x: Vec<f32> = (0..n * c * l)
        .map(|i| ((i * 7919 % 1000) as f32 / 250.0 - 2.0) * (1.0 + (i / l % c) as f32))
        .collect();
    // The teacher: weight a, bias b on the same normalized input.
    let (a, b) = ([2.0f32, -1.0, 0.5, 3.0], [0.5f32, -2.0, 1.0, 0.0]);
    let eps = 1e-5;
    let (mean, var) = batch_stats(&x, &shape)?;
    let xhat = |i: usize| {
        let ch = i / l % c;
        (f64::from(x[i]) - mean[ch]) / (var[ch] + eps).sqrt()
    };
    let neg_target: Vec<f32> = (0..x.len())
        .map(|i| -((f64::from(a[i / l % c]) * xhat(i) + f64::from(b[i / l % c])) as f32))
        .collect();

    let mut bn = BatchNorm1d::new(&ctx, c)?;
    let xt = Tensor::from_slice(&ctx, &x, &shape)?;
    let rt = Tensor::from_slice(&ctx, &neg_target, &shape)?;
    let count = (n * l) as f64;
    let options = SgdOptions {
        lr: 0.012 / count,
        momentum: 0.3,
        ..Default::default()
    };
    let mut sgd = Sgd::new(&ctx, options)?;

    // The same steps on the host, in f64, from weight 1 and bias 0.
    let mut host: Vec<(f64, Option<f64>)> = (0..2 * c)
        .map(|i| (f64::from(u8::from(i < c)), None))
        .collect();
    let hyper = (
        options.lr,
        options.momentum,
        options.dampening,
        options.weight_decay,
        false,
    );

    let mut losses = Vec::new();
    for step in 0..300 {
        let (residual_out, saved) = bn.forward_with(&xt).residual(Some(&rt)).run()?; // y - target
        let grads = bn.backward_saved(&saved, &residual_out)?;
        if step % 25 == 0 || step == 299 {
            let d = residual_out.to_host()?;
            let loss =
                d.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / (2.0 * d.len() as f64);
            println!("step {step:>3}: loss {loss:.6e}");
            losses.push(loss);
        }
        sgd.step(&mut bn, &grads)?;
        // Host: gradients of 0.5 |w xhat + b - target|^2 per channel.
        for ch in 0..c {
            let (w, bias) = (host[ch].0, host[c + ch].0);
            let (mut gw, mut gb) = (0.0, 0.0);
            for bi in 0..n {
                for j in 0..l {
                    let i = (bi * c + ch) * l + j;
                    let dy = w * xhat(i) + bias + f64::from(neg_target[i]);
                    gw += dy * xhat(i);
                    gb += dy;
                }
            }
            let pw = &mut host[ch];
            pw.0 = sgd_step(pw.0, gw, &mut pw.1, hyper);
            let pb = &mut host[c + ch];
            pb.0 = sgd_step(pb.0, gb, &mut pb.1, hyper);
        }
    }
    let monotone = losses.windows(2).all(|w| w[1] < w[0]);
    let weight = bn.weight()?.unwrap_or_default();
    let bias = bn.bias()?.unwrap_or_default();
    let worst = weight
        .iter()
        .chain(&bias)
        .zip(&host)
        .map(|(&g, h)| (f64::from(g) - h.0).abs() / (1.0 + h.0.abs()))
        .fold(0.0f64, f64::max);
    println!("weight {weight:?} (teacher {a:?})");
    println!("bias   {bias:?} (teacher {b:?})");
    println!("loss decreasing monotonically: {monotone}; worst relative difference to the host's f64 steps: {worst:.2e}");
    if !monotone || worst > 1e-4 {
        std::process::exit(1);
    }
    Ok(())
}
