//! Helpers shared by the integration tests: contexts for both reduction paths, a small
//! deterministic RNG, and tolerance checks in the golden README's terms.

#![allow(dead_code)]

pub mod golden;
#[cfg(not(target_arch = "wasm32"))]
pub mod state_dict;

#[cfg(not(target_arch = "wasm32"))]
use wgpu_batchnorm::{Context, ContextOptions};

/// The default context (subgroup reductions where the adapter has them).
#[cfg(not(target_arch = "wasm32"))]
pub fn context() -> Context {
    Context::new()
        .expect("a GPU adapter (on Linux without a GPU: apt-get install mesa-vulkan-drivers)")
}

/// A context that uses the workgroup-memory reductions even where subgroups exist.
#[cfg(not(target_arch = "wasm32"))]
pub fn context_without_subgroups() -> Context {
    let mut options = ContextOptions::from_env();
    options.disable_subgroups = true;
    Context::with_options(options).expect("a GPU adapter")
}

/// A context whose tensor kernels use `walk` wherever it can serve the shape, on the given
/// reduction path.
#[cfg(not(target_arch = "wasm32"))]
pub fn context_with_walk(walk: wgpu_batchnorm::Walk, disable_subgroups: bool) -> Context {
    let mut options = ContextOptions::from_env();
    options.forced.walk = Some(walk);
    // The walks are those of the multi-pass path.
    options.forced.pass_plan = Some(wgpu_batchnorm::PassPlan::MultiPass);
    options.disable_subgroups = disable_subgroups;
    Context::with_options(options).expect("a GPU adapter")
}

/// Both reduction paths (just one where the adapter has no subgroups).
#[cfg(not(target_arch = "wasm32"))]
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

/// Forward and backward checks against the f64 reference, shared by the scale tests.
pub mod checks {
    use super::golden::{per_channel_ratio, ratio, rel_l2_ratio, TOL};
    use super::Rng;
    use wgpu_batchnorm::reference::{self, ReferenceBatchNorm};
    use wgpu_batchnorm::{BatchNorm, BatchNormOptions, Context, Flavor, Gradients, Tensor};

    pub fn flavor_for(rank: usize) -> Flavor {
        Flavor::for_rank(rank).expect("a batch-norm rank (2 to 5)")
    }

    /// A GPU module and a reference of `shape`'s flavor, with the same random weight and bias
    /// (when affine) and the initial running statistics.
    pub fn module_pair(
        ctx: &Context,
        shape: &[usize],
        options: BatchNormOptions,
        rng: &mut Rng,
    ) -> (BatchNorm, ReferenceBatchNorm) {
        let c = shape[1];
        let mut gpu = BatchNorm::new(ctx, flavor_for(shape.len()), c, options).unwrap();
        let mut cpu = ReferenceBatchNorm::new(c, options);
        if options.affine {
            let w = rng.vec_f32(c, -0.5, 2.0);
            let b = rng.vec_f32(c, -1.0, 1.0);
            gpu.set_weight(&w).unwrap();
            gpu.set_bias(&b).unwrap();
            cpu.weight = super::widen(&w);
            cpu.bias = super::widen(&b);
        }
        (gpu, cpu)
    }

    /// Sets the same running statistics on both modules.
    pub fn set_running(gpu: &mut BatchNorm, cpu: &mut ReferenceBatchNorm, rm: &[f32], rv: &[f32]) {
        gpu.set_running_mean(rm).unwrap();
        gpu.set_running_var(rv).unwrap();
        cpu.running_mean = super::widen(rm);
        cpu.running_var = super::widen(rv);
    }

    /// Worst err/allowed of the GPU's gradients against the reference's for the reference's
    /// last forward (input `x`), with the golden README's scales computed from the reference
    /// statistics; asserts each is within tolerance.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn gradient_ratio(
        ctx: &Context,
        grads: &Gradients,
        cpu: &ReferenceBatchNorm,
        x: &[f32],
        dy: &[f32],
        shape: &[usize],
    ) -> f64 {
        gradient_ratio_through(ctx, grads, cpu, x, dy, shape, false)
    }

    /// [`gradient_ratio`] where `dy` is the gradient that reached batch norm through an
    /// activation (`through_activation`): it then depends on the pre-activation and so on the
    /// f32 statistics, and grad_bias = sum(dz) inherits their conditioning factor K_c like
    /// grad_weight does (the golden README's grad_bias bound has none because sum(dy) does not
    /// depend on the statistics).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn gradient_ratio_through(
        ctx: &Context,
        grads: &Gradients,
        cpu: &ReferenceBatchNorm,
        x: &[f32],
        dy: &[f32],
        shape: &[usize],
        through_activation: bool,
    ) -> f64 {
        let _ = ctx; // the tensors read themselves back through their own context
        pollster::block_on(gradient_ratio_async(
            grads,
            cpu,
            (x, dy, shape),
            through_activation,
        ))
    }

    /// [`gradient_ratio_through`], awaiting the readbacks (the one implementation).
    pub async fn gradient_ratio_async(
        grads: &Gradients,
        cpu: &ReferenceBatchNorm,
        (x, dy, shape): (&[f32], &[f32], &[usize]),
        through_activation: bool,
    ) -> f64 {
        let want = cpu.backward(x, shape, dy).unwrap();
        let (mean, var) = cpu.last_stats.clone().unwrap();
        let eps = cpu.options.eps;
        let kappa_c = reference::kappa(&mean, &var, eps);
        let k = 1.0 + kappa_c.iter().copied().fold(0.0, f64::max) / 30.0;
        let (n, c) = (shape[0], shape[1]);
        let s: usize = shape[2..].iter().product();
        let mut gi_scale = 0.0;
        let mut gw_scale = vec![0.0; c];
        let mut gb_scale = vec![0.0; c];
        for b in 0..n {
            for ch in 0..c {
                let invstd = 1.0 / (var[ch] + eps).sqrt();
                for i in (b * c + ch) * s..(b * c + ch + 1) * s {
                    let g = f64::from(dy[i]);
                    let xhat = (f64::from(x[i]) - mean[ch]) * invstd;
                    gi_scale += (cpu.weight[ch] * invstd * g).powi(2);
                    gw_scale[ch] += g.abs() * (1.0 + xhat.abs());
                    gb_scale[ch] += g.abs();
                }
            }
        }
        let gx = grads.grad_input.to_host_async().await.unwrap();
        let diff = gx
            .iter()
            .zip(&want.grad_input)
            .map(|(&g, &w)| (f64::from(g) - w).powi(2))
            .sum::<f64>()
            .sqrt();
        let mut worst = ratio(diff, TOL * k * gi_scale.sqrt());
        assert!(worst <= 1.0, "{shape:?}: grad_input err/allowed {worst}");
        assert_eq!(grads.grad_weight.is_some(), cpu.options.affine);
        if let (Some(gw), Some(gb)) = (&grads.grad_weight, &grads.grad_bias) {
            let gw = gw.to_host_async().await.unwrap();
            let gb = gb.to_host_async().await.unwrap();
            let rw = per_channel_ratio(&gw, &want.grad_weight, |ch| {
                TOL * (1.0 + kappa_c[ch] / 30.0) * gw_scale[ch]
            });
            let rb = per_channel_ratio(&gb, &want.grad_bias, |ch| {
                let k_c = if through_activation {
                    1.0 + kappa_c[ch] / 30.0
                } else {
                    1.0
                };
                TOL * k_c * gb_scale[ch]
            });
            assert!(rw <= 1.0, "{shape:?}: grad_weight err/allowed {rw}");
            assert!(rb <= 1.0, "{shape:?}: grad_bias err/allowed {rb}");
            worst = worst.max(rw).max(rb);
        }
        worst
    }

    /// Worst err/allowed of a forward's output `y` and the module's running statistics
    /// (`running`: mean and var, None when not tracked) against the reference after the same
    /// forward (`y64`), with the golden README's tolerances; asserts each, naming `what`.
    pub fn forward_ratio(
        what: &str,
        y: &[f32],
        y64: &[f64],
        running: Option<(Vec<f32>, Vec<f32>)>,
        cpu: &ReferenceBatchNorm,
    ) -> f64 {
        let (mean, var) = cpu.last_stats.clone().unwrap();
        let kappa_c = reference::kappa(&mean, &var, cpu.options.eps);
        let k = 1.0 + kappa_c.iter().copied().fold(0.0, f64::max) / 30.0;
        let mut worst = rel_l2_ratio(y, y64, k);
        assert!(worst <= 1.0, "{what}: output err/allowed {worst}");
        assert_eq!(running.is_some(), cpu.options.track_running_stats, "{what}");
        if let Some((rm, rv)) = running {
            let rm_r = per_channel_ratio(&rm, &cpu.running_mean, |ch| {
                TOL * (cpu.running_mean[ch].abs() + cpu.running_var[ch].sqrt())
            });
            let rv_r = per_channel_ratio(&rv, &cpu.running_var, |ch| {
                TOL * (1.0 + kappa_c[ch] / 30.0) * cpu.running_var[ch]
            });
            assert!(
                rm_r <= 1.0 && rv_r <= 1.0,
                "{what}: running stats err/allowed {rm_r} {rv_r}"
            );
            worst = worst.max(rm_r).max(rv_r);
        }
        worst
    }

    /// Training forward + backward, then eval forward + backward, on the GPU and the reference
    /// from the same random state; asserts the golden README's tolerances for outputs, running
    /// statistics and gradients, and returns the worst err/allowed ratio.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn check_forward_backward(ctx: &Context, shape: &[usize], seed: u64) -> f64 {
        pollster::block_on(check_forward_backward_async(ctx, shape, seed))
    }

    /// [`check_forward_backward`] on the async calls (the one implementation; the browser
    /// tests run it as it is).
    pub async fn check_forward_backward_async(ctx: &Context, shape: &[usize], seed: u64) -> f64 {
        let c = shape[1];
        let options = BatchNormOptions::default();
        let mut rng = Rng::new(seed);
        let (mut gpu, mut cpu) = module_pair(ctx, shape, options, &mut rng);
        let means: Vec<f64> = (0..c).map(|_| rng.range(-1.5, 1.5)).collect();
        let stds: Vec<f64> = (0..c).map(|_| rng.range(0.5, 2.0)).collect();
        let mut worst: f64 = 0.0;
        for training in [true, false] {
            gpu.set_training(training);
            cpu.training = training;
            let x = rng.channel_data(shape, &means, &stds);
            let dy = rng.channel_data(shape, &vec![0.1; c], &vec![1.0; c]);
            let xt = Tensor::from_slice_async(ctx, &x, shape).await.unwrap();
            let y = gpu.forward_async(&xt).await.unwrap();
            let y = y.to_host_async().await.unwrap();
            let y64 = cpu.forward(&x, shape).unwrap();
            let running = gpu
                .running_mean_async()
                .await
                .unwrap()
                .zip(gpu.running_var_async().await.unwrap());
            let what = format!("{shape:?} training={training}");
            worst = worst.max(forward_ratio(&what, &y, &y64, running, &cpu));

            let dyt = Tensor::from_slice_async(ctx, &dy, shape).await.unwrap();
            let grads = gpu.backward_async(&dyt).await.unwrap();
            let ratio = gradient_ratio_async(&grads, &cpu, (&x, &dy, shape), false).await;
            worst = worst.max(ratio);
        }
        worst
    }
}
