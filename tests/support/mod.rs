//! Helpers shared by the integration tests: contexts for both reduction paths, a small
//! deterministic RNG, and tolerance checks in the golden README's terms.

#![allow(dead_code)]

pub mod golden;

use wgpu_batchnorm::{Context, ContextOptions};

/// The default context (subgroup reductions where the adapter has them).
pub fn context() -> Context {
    Context::new()
        .expect("a GPU adapter (on Linux without a GPU: apt-get install mesa-vulkan-drivers)")
}

/// A context that uses the workgroup-memory reductions even where subgroups exist.
pub fn context_without_subgroups() -> Context {
    let mut options = ContextOptions::from_env();
    options.disable_subgroups = true;
    Context::with_options(options).expect("a GPU adapter")
}

/// Both reduction paths (just one where the adapter has no subgroups).
pub fn contexts() -> Vec<(&'static str, Context)> {
    let ctx = context();
    let mut list = vec![];
    if ctx.adapter().subgroups {
        list.push(("subgroups", ctx));
        list.push(("workgroup memory", context_without_subgroups()));
    } else {
        list.push(("workgroup memory", ctx));
    }
    list
}

/// PCG-style generator with normal samples (Box-Muller); deterministic per seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let x = self.0;
        (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ (x >> 32)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// (N, C, ...) data with a per-channel mean and std.
    pub fn channel_data(&mut self, shape: &[usize], means: &[f64], stds: &[f64]) -> Vec<f32> {
        let n = shape[0];
        let c = shape[1];
        let s: usize = shape[2..].iter().product();
        let mut x = Vec::with_capacity(n * c * s);
        for _ in 0..n {
            for ch in 0..c {
                for _ in 0..s {
                    x.push((means[ch] + stds[ch] * self.normal()) as f32);
                }
            }
        }
        x
    }

    pub fn vec_f32(&mut self, len: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..len).map(|_| self.range(lo, hi) as f32).collect()
    }
}

/// Widens f32 values for the f64 reference.
pub fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}
