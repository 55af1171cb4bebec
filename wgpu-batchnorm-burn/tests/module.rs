//! The Burn module against the core crate's f64 reference, on one shared device: training and
//! eval forwards, Burn's autodiff gradients, channels-last and f16 inputs, the one-type swap
//! from Burn's `BatchNorm` record, and typed errors that change nothing.

use std::sync::OnceLock;

use burn::module::{Module, Param};
use burn::tensor::{DType, Device, Distribution, Tensor, TensorData};
use wgpu_batchnorm::BatchNormOptions;
use wgpu_batchnorm::reference::ReferenceBatchNorm;
use wgpu_batchnorm_burn::{BatchNorm, BatchNormConfig, Error};

/// One shared device for every test in this binary (cubecl registers a device once).
fn device() -> Device {
    static DEVICE: OnceLock<burn::backend::wgpu::WgpuDevice> = OnceLock::new();
    let wgpu = DEVICE.get_or_init(|| {
        wgpu_batchnorm_burn::new_shared_device()
            .expect("a wgpu adapter (lavapipe in CI)")
            .0
    });
    Device::new(wgpu.clone())
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.cast(DType::F32)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn max_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs() / (1.0 + w.abs()))
        .fold(0.0, f64::max)
}

fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::random(shape, Distribution::Normal(0.5, 2.0), device)
}

/// A module with non-trivial weight and bias, and its reference twin.
fn pair(c: usize, momentum: Option<f64>, device: &Device) -> (BatchNorm, ReferenceBatchNorm) {
    let mut bn = BatchNormConfig::new(c).with_momentum(momentum).init(device);
    let weight: Vec<f32> = (0..c).map(|i| 0.5 + 0.25 * i as f32).collect();
    let bias: Vec<f32> = (0..c).map(|i| -0.3 + 0.1 * i as f32).collect();
    bn.gamma = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(weight.clone(), [c]),
        device,
    )));
    bn.beta = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(bias.clone(), [c]),
        device,
    )));
    let mut reference = ReferenceBatchNorm::new(
        c,
        BatchNormOptions {
            momentum,
            ..BatchNormOptions::default()
        },
    );
    reference.weight = weight.iter().map(|&w| f64::from(w)).collect();
    reference.bias = bias.iter().map(|&b| f64::from(b)).collect();
    (bn, reference)
}

#[test]
fn training_steps_and_gradients_match_the_f64_reference() {
    let device = device().autodiff();
    // Odd sizes, not powers of two; momentum None exercises num_batches_tracked on the GPU.
    for momentum in [Some(0.1), None] {
        let shape = [3, 5, 7, 11];
        let (bn, mut reference) = pair(5, momentum, &device);
        for step in 0..3 {
            let x = random(shape, &device).require_grad();
            let dy = random(shape, &device);
            let y = bn.forward(x.clone());
            let xs = values(x.clone());
            let want = reference.forward(&xs, &shape).unwrap();
            assert!(
                max_err(&values(y.clone()), &want) < 1e-5,
                "output, step {step}"
            );

            let rm = values(bn.running_mean.as_ref().unwrap().value_sync());
            let rv = values(bn.running_var.as_ref().unwrap().value_sync());
            assert!(max_err(&rm, &reference.running_mean) < 1e-5, "running_mean");
            assert!(max_err(&rv, &reference.running_var) < 1e-5, "running_var");
            let n = values(bn.num_batches_tracked.as_ref().unwrap().value_sync())[0];
            assert_eq!(n as u64, reference.num_batches_tracked);

            let grads = (y * dy.clone()).sum().backward();
            let dys = values(dy);
            let want = reference.backward(&xs, &shape, &dys).unwrap();
            let gx = values(x.grad(&grads).unwrap());
            assert!(
                max_err(&gx, &want.grad_input) < 1e-4,
                "grad_input, step {step}"
            );
            let gw = values(bn.gamma.as_ref().unwrap().val().grad(&grads).unwrap());
            let gb = values(bn.beta.as_ref().unwrap().val().grad(&grads).unwrap());
            assert!(max_err(&gw, &want.grad_weight) < 1e-4, "grad_weight");
            assert!(max_err(&gb, &want.grad_bias) < 1e-4, "grad_bias");
        }
    }
}

#[test]
fn eval_without_autodiff_normalizes_with_the_running_statistics() {
    let device = device();
    let (bn, mut reference) = pair(4, Some(0.1), &device);
    let mean: Vec<f32> = vec![0.5, -1.0, 2.0, 0.0];
    let var: Vec<f32> = vec![1.5, 0.25, 4.0, 1.0];
    bn.running_mean.as_ref().unwrap().update(Tensor::from_data(
        TensorData::new(mean.clone(), [4]),
        &device,
    ));
    bn.running_var.as_ref().unwrap().update(Tensor::from_data(
        TensorData::new(var.clone(), [4]),
        &device,
    ));
    reference.running_mean = mean.iter().map(|&v| f64::from(v)).collect();
    reference.running_var = var.iter().map(|&v| f64::from(v)).collect();
    reference.training = false;
    let shape = [2, 4, 3, 5];
    let x = random(shape, &device);
    let y = bn.forward(x.clone());
    let want = reference.forward(&values(x), &shape).unwrap();
    assert!(max_err(&values(y), &want) < 1e-5);
    // Eval changes nothing.
    assert_eq!(values(bn.running_mean.as_ref().unwrap().value_sync()), mean);
    assert_eq!(
        values(bn.num_batches_tracked.as_ref().unwrap().value_sync()),
        vec![0.0]
    );
}

#[test]
fn a_channels_last_input_gives_the_values_of_its_contiguous_copy() {
    let device = device().autodiff();
    let (bn, _) = pair(6, Some(0.1), &device);
    let (bn2, _) = pair(6, Some(0.1), &device);
    // A channels-last view (NHWC memory, NCHW logical shape) and a contiguous copy of it.
    let x_cl = Tensor::<4>::random([2, 5, 3, 6], Distribution::Normal(0.5, 2.0), &device)
        .permute([0, 3, 1, 2]);
    let x = Tensor::<4>::from_data(x_cl.clone().into_data(), &device);
    let y = bn.forward(x);
    let y_cl = bn2.forward(x_cl);
    let (a, b) = (values(y), values(y_cl));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-5, "channels-last differs by {worst}");
}

#[test]
fn f16_input_takes_the_f16_path() {
    let device = device().autodiff();
    if !device.supports_dtype(DType::F16) {
        // The GL backend: Burn cannot make f16 tensors there (the core crate's tests cover f16).
        eprintln!("skipped: Burn has no f16 on this adapter");
        return;
    }
    let (bn, mut reference) = pair(3, Some(0.1), &device);
    let shape = [4, 3, 6, 5];
    let x = random(shape, &device).cast(DType::F16);
    let y = bn.forward(x.clone());
    assert_eq!(y.dtype(), DType::F16);
    let want = reference.forward(&values(x), &shape).unwrap();
    // One rounding of the output to f16 (2^-11 relative).
    assert!(max_err(&values(y), &want) < 2e-3);
}

#[test]
fn a_burn_batchnorm_record_loads_into_this_module() {
    let device = device();
    let burn_bn = burn::nn::BatchNormConfig::new(3).init(&device);
    let gamma = Tensor::<1>::from_floats([2.0, 3.0, 4.0], &device);
    let burn_bn = burn::nn::BatchNorm {
        gamma: Param::from_tensor(gamma),
        ..burn_bn
    };
    let record = burn_bn.into_record().allow_partial(true);
    let ours = BatchNormConfig::new(3).init(&device).load_record(record);
    assert_eq!(values(ours.gamma.unwrap().val()), vec![2.0, 3.0, 4.0]);
}

#[test]
fn bad_calls_are_typed_errors_that_change_nothing() {
    let device = device().autodiff();
    let (bn, _) = pair(4, Some(0.1), &device);
    let before = values(bn.running_mean.as_ref().unwrap().value_sync());
    let wrong_channels = random([2, 5, 3, 3], &device);
    assert!(matches!(
        bn.try_forward(wrong_channels),
        Err(Error::ChannelMismatch { .. })
    ));
    let one_value = random([1, 4, 1, 1], &device);
    assert!(matches!(
        bn.try_forward(one_value),
        Err(Error::TooFewValuesPerChannel { .. })
    ));
    let x = random([2, 4, 3, 3], &device);
    let residual = random([2, 4, 3, 2], &device);
    assert!(matches!(
        bn.try_forward_residual(x, Some(residual), wgpu_batchnorm::Activation::Relu),
        Err(Error::ShapeMismatch { .. })
    ));
    assert_eq!(
        values(bn.running_mean.as_ref().unwrap().value_sync()),
        before
    );
    assert_eq!(
        values(bn.num_batches_tracked.as_ref().unwrap().value_sync()),
        vec![0.0]
    );
}

#[test]
fn a_pytorch_state_dict_loads_through_the_core_crate() {
    let device = device();
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/state_dict/model.safetensors"
    ))
    .unwrap();
    let mut bn = BatchNormConfig::new(16).init(&device);
    let keys = bn.try_load_state_dict(&bytes, "stem.bn.", &device).unwrap();
    assert_eq!(keys.len(), 5, "{keys:?}");
    // The same keys through the core crate's own module.
    let ctx =
        wgpu_batchnorm_burn::context_of(&wgpu_batchnorm_burn::wgpu_of(&device).unwrap()).unwrap();
    let mut core = wgpu_batchnorm::BatchNorm2d::new(&ctx, 16).unwrap();
    wgpu_batchnorm::state_dict::load(&mut core, &bytes, "stem.bn.", true).unwrap();
    assert_eq!(
        values(bn.gamma.as_ref().unwrap().val()),
        core.weight().unwrap().unwrap()
    );
    assert_eq!(
        values(bn.running_var.as_ref().unwrap().value_sync()),
        core.running_var().unwrap().unwrap()
    );
    let n = values(bn.num_batches_tracked.as_ref().unwrap().value_sync())[0];
    assert_eq!(Some(n as u64), core.num_batches_tracked().unwrap());
    // A wrong prefix is the core crate's error, and changes nothing.
    let before = values(bn.running_mean.as_ref().unwrap().value_sync());
    assert!(matches!(
        bn.try_load_state_dict(&bytes, "no.such.layer.", &device),
        Err(Error::StateDict { .. })
    ));
    assert_eq!(
        values(bn.running_mean.as_ref().unwrap().value_sync()),
        before
    );
}

#[test]
fn a_training_step_leaves_tensors_that_share_the_old_running_buffers_alone() {
    let device = device().autodiff();
    let (bn, _) = pair(4, Some(0.1), &device);
    // A caller's handle on the running buffers (a saved record, a logger): Burn's tensors are
    // values, so the update must not write through it.
    let held_mean = bn.running_mean.as_ref().unwrap().value_sync();
    let held_var = bn.running_var.as_ref().unwrap().value_sync();
    for _ in 0..2 {
        let _ = bn.forward(random([3, 4, 5, 5], &device));
    }
    assert_eq!(values(held_mean), vec![0.0; 4]);
    assert_eq!(values(held_var), vec![1.0; 4]);
    assert_ne!(
        values(bn.running_mean.as_ref().unwrap().value_sync()),
        vec![0.0; 4]
    );
}
