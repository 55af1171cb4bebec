//! The classic first example: `nn.BatchNorm1d(3)` on a random (4, 3) input.
//!
//! Run with `cargo run --release --example quickstart`.

use wgpu_batchnorm::{BatchNorm1d, Context, Tensor};

/// A small deterministic generator, so the example needs no extra crates.
fn uniform(state: &mut u64) -> f32 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*state >> 40) as f32) / ((1u64 << 24) as f32)
}

fn print_rows(name: &str, values: &[f32], cols: usize) {
    println!("{name}:");
    for row in values.chunks(cols) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:9.4}")).collect();
        println!("  [{}]", cells.join(", "));
    }
}

fn main() -> Result<(), wgpu_batchnorm::Error> {
    env_logger::init();
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter());

    let (n, c) = (4, 3);
    let mut seed = 42u64;
    // Features with different scales and offsets, like real activations.
    let data: Vec<f32> = (0..n * c)
        .map(|i| {
            let feature = (i % c) as f32;
            (uniform(&mut seed) * 2.0 - 1.0) * (1.0 + feature) + 3.0 * feature
        })
        .collect();
    let x = Tensor::from_slice(&ctx, &data, &[n, c])?;

    let mut bn = BatchNorm1d::new(&ctx, c)?; // nn.BatchNorm1d(3), training mode
    let y = bn.forward(&x)?.to_vec(&ctx)?; // y = bn(x)
    print_rows("input", &data, c);
    print_rows("output (training mode)", &y, c);

    println!("per-feature output mean / std (biased):");
    for f in 0..c {
        let col: Vec<f64> = (0..n).map(|r| f64::from(y[r * c + f])).collect();
        let mean = col.iter().sum::<f64>() / n as f64;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        println!("  feature {f}: mean {mean:+.2e}, std {:.5}", var.sqrt());
    }

    println!("running_mean: {:?}", bn.running_mean()?.unwrap_or_default());
    println!("running_var:  {:?}", bn.running_var()?.unwrap_or_default());
    println!(
        "num_batches_tracked: {}",
        bn.num_batches_tracked()?.unwrap_or_default()
    );

    bn.eval(); // bn.eval()
    let y_eval = bn.forward(&x)?.to_vec(&ctx)?;
    print_rows("output (eval mode, running statistics)", &y_eval, c);
    Ok(())
}
