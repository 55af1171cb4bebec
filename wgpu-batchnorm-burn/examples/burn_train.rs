//! A small Burn CNN (two conv-BN-ReLU blocks and a linear head) trained with SGD on synthetic
//! data, once with this crate's `BatchNorm` and once with Burn's own, from the same seed.
//!
//! ```sh
//! cargo run --release -p wgpu-batchnorm-burn --example burn_train -- [STEPS]
//! ```
//!
//! Prints both losses every 25 steps, then checks that this module's loss went down.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, activation::relu};

/// The two batch norms the model can be built with.
trait Norm: Module + burn::module::ModuleDisplay {
    fn new(channels: usize, device: &Device) -> Self;
    fn apply(&self, x: Tensor<4>) -> Tensor<4>;
}

impl Norm for burn::nn::BatchNorm {
    fn new(channels: usize, device: &Device) -> Self {
        burn::nn::BatchNormConfig::new(channels).init(device)
    }
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.forward(x))
    }
}

impl Norm for wgpu_batchnorm_burn::BatchNorm {
    fn new(channels: usize, device: &Device) -> Self {
        wgpu_batchnorm_burn::BatchNormConfig::new(channels).init(device)
    }
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        // The ReLU runs in the normalize pass.
        self.forward_residual(x, None, wgpu_batchnorm_burn::Activation::Relu)
    }
}

#[derive(Module, Debug)]
struct Net<N: Norm> {
    conv1: Conv2d,
    norm1: N,
    conv2: Conv2d,
    norm2: N,
    head: Linear,
}

const CLASSES: usize = 4;

impl<N: Norm> Net<N> {
    fn new(device: &Device) -> Self {
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device)
        };
        Net {
            conv1: conv(3, 16),
            norm1: N::new(16, device),
            conv2: conv(16, 32),
            norm2: N::new(32, device),
            head: LinearConfig::new(32, CLASSES).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.norm1.apply(self.conv1.forward(x));
        let x = self.norm2.apply(self.conv2.forward(x));
        // Global average pool over H and W.
        let [n, c, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([n, c]);
        self.head.forward(pooled)
    }
}

/// A batch of 3x16x16 images whose class is a per-class colour offset under noise.
fn batch(device: &Device, n: usize) -> (Tensor<4>, Tensor<1, Int>) {
    let labels = Tensor::<1, Int>::random([n], Distribution::Uniform(0.0, CLASSES as f64), device);
    let offsets = Tensor::<2>::from_floats(
        [
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [1.0, 1.0, 0.0],
        ],
        device,
    );
    let colour = offsets.select(0, labels.clone()).reshape([n, 3, 1, 1]);
    let noise = Tensor::<4>::random([n, 3, 16, 16], Distribution::Normal(0.0, 1.0), device);
    (noise + colour.mul_scalar(0.8), labels)
}

fn train<N: Norm>(device: &Device, steps: usize, seed: u64) -> Vec<f32> {
    device.seed(seed);
    let mut model = Net::<N>::new(device);
    let mut optim = SgdConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let (x, y) = batch(device, 32);
        let loss = loss_fn.forward(model.forward(x), y);
        losses.push(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.05, model, grads);
    }
    losses
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len().max(1) as f32
}

fn main() {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let (wgpu_device, ctx) = wgpu_batchnorm_burn::new_shared_device().expect("a wgpu device");
    println!("adapter: {}", ctx.adapter());
    let device = Device::new(wgpu_device).autodiff();
    let ours = train::<wgpu_batchnorm_burn::BatchNorm>(&device, steps, 7);
    let burns = train::<burn::nn::BatchNorm>(&device, steps, 7);
    println!("step  wgpu-batchnorm-burn  burn::nn::BatchNorm");
    for i in (0..steps).step_by(25).chain(std::iter::once(steps - 1)) {
        println!("{i:>4}  {:>19.6}  {:>19.6}", ours[i], burns[i]);
    }
    // Same seed, same batches: the two differ only by the batch norm's f32 rounding.
    let gap = ours
        .iter()
        .zip(&burns)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("largest |loss difference| over the steps: {gap:.3e}");
    let window = (steps / 10).max(1);
    let (first, last) = (mean(&ours[..window]), mean(&ours[steps - window..]));
    let (burn_first, burn_last) = (mean(&burns[..window]), mean(&burns[steps - window..]));
    println!(
        "mean loss, first and last {window} steps: ours {first:.4} -> {last:.4}, \
         Burn's {burn_first:.4} -> {burn_last:.4}"
    );
    if last.is_nan() || last >= 0.7 * first {
        eprintln!("the loss did not go down");
        std::process::exit(1);
    }
}
