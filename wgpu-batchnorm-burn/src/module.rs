//! The Burn module: PyTorch's `nn.BatchNorm1d/2d/3d` with Burn's shape (`BatchNormConfig`,
//! `#[derive(Module)]`, `forward(&self, x)`), whose calls go to [`BatchNormOps`].

use burn::backend::Dispatch;
use burn::config::Config;
use burn::module::{Flag, Module, Param, RunningState};
use burn::tensor::{DType, Device, Int, Tensor};
use wgpu_batchnorm::{Activation, Error};

// Not `Result`: Burn's `Config` derive names `Result` unqualified and means std's.
type BnResult<T> = wgpu_batchnorm::Result<T>;

use crate::ops::{BatchNormOps, ForwardSpec, Maybe, Operands, Stats};

/// `nn.BatchNorm{1,2,3}d`'s constructor arguments, in Burn's config style.
#[derive(Config, Debug)]
pub struct BatchNormConfig {
    /// `C`, the channel count (dimension 1 of the input).
    pub num_features: usize,
    /// Added to the variance. PyTorch's `eps`.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Running-update factor; `None`: cumulative average over `num_batches_tracked`.
    #[config(default = "Some(0.1)")]
    pub momentum: Option<f64>,
    /// Learnable `gamma` (weight, init 1) and `beta` (bias, init 0).
    #[config(default = true)]
    pub affine: bool,
    /// Keep `running_mean`, `running_var` and `num_batches_tracked`; without them eval also
    /// normalizes with batch statistics.
    #[config(default = true)]
    pub track_running_stats: bool,
}

/// Batch normalization over the channel axis (1) of a 2-D to 5-D input, as PyTorch computes
/// it: unbiased running variance, `momentum = None`, `num_batches_tracked`, optional affine and
/// running statistics. Field names follow Burn's `nn::BatchNorm` (`gamma`, `beta`,
/// `running_mean`, `running_var`), so its records load into this module.
#[derive(Module, Debug)]
pub struct BatchNorm {
    /// The weight, `[C]` (affine only).
    pub gamma: Option<Param<Tensor<1>>>,
    /// The bias, `[C]` (affine only).
    pub beta: Option<Param<Tensor<1>>>,
    /// Training behaviour where the device records gradients (as Burn's `BatchNorm`).
    pub training: Param<Flag>,
    /// `[C]`, tracked only.
    pub running_mean: Option<RunningState<Tensor<1>>>,
    /// `[C]`, unbiased, tracked only.
    pub running_var: Option<RunningState<Tensor<1>>>,
    /// The number of training forwards, `[1]` (a float tensor: Burn keeps running state in
    /// float tensors; exact up to 2^24), tracked only.
    pub num_batches_tracked: Option<RunningState<Tensor<1>>>,
    /// Running-update factor; `None`: cumulative average.
    pub momentum: Option<f64>,
    /// Added to the variance.
    pub epsilon: f64,
}

impl BatchNormConfig {
    /// The module on `device`, or the reason the config is invalid.
    pub fn try_init(&self, device: &Device) -> BnResult<BatchNorm> {
        if self.num_features == 0 {
            return Err(Error::InvalidArgument("num_features must be > 0".into()));
        }
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "epsilon must be finite and >= 0, got {}",
                self.epsilon
            )));
        }
        if let Some(m) = self.momentum
            && !m.is_finite()
        {
            return Err(Error::InvalidArgument(format!(
                "momentum must be finite, got {m}"
            )));
        }
        let c = self.num_features;
        let param = |value: f32| Param::from_tensor(Tensor::full([c], value, device));
        let state = |value: f32| RunningState::new(Tensor::full([c], value, device));
        let track = self.track_running_stats;
        Ok(BatchNorm {
            gamma: self.affine.then(|| param(1.0)),
            beta: self.affine.then(|| param(0.0)),
            training: Param::from_bool(true),
            running_mean: track.then(|| state(0.0)),
            running_var: track.then(|| state(1.0)),
            num_batches_tracked: track.then(|| RunningState::new(Tensor::zeros([1], device))),
            momentum: self.momentum,
            epsilon: self.epsilon,
        })
    }

    /// The module on `device`; panics where [`BatchNormConfig::try_init`] returns an error.
    pub fn init(&self, device: &Device) -> BatchNorm {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn float32(t: Tensor<1>) -> Tensor<1> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(DType::F32)
    }
}

fn maybe(t: Option<Tensor<1>>) -> Maybe<Dispatch> {
    match t {
        Some(t) => Maybe::Some(float32(t).into_dispatch()),
        None => Maybe::None,
    }
}

impl BatchNorm {
    /// `C`.
    pub fn num_features(&self) -> usize {
        let t = match (&self.running_mean, &self.gamma) {
            (Some(r), _) => r.value_sync(),
            (None, Some(g)) => g.val(),
            // A module with neither keeps C nowhere; its calls take C from the input.
            (None, None) => return 0,
        };
        t.dims()[0]
    }

    /// Loads the keys under `prefix` of a PyTorch safetensors `state_dict` (`weight`, `bias`,
    /// `running_mean`, `running_var`, `num_batches_tracked`), as
    /// `module.load_state_dict(sd, strict=True)` does on that prefix, through the core crate's
    /// [`wgpu_batchnorm::state_dict::load`] (its checks of keys, shapes and dtypes, f16 keys
    /// widened). The values pass through the host once: a checkpoint load, not a step. On an
    /// error nothing changes. Returns the keys loaded.
    pub fn try_load_state_dict(
        &mut self,
        bytes: &[u8],
        prefix: &str,
        device: &Device,
    ) -> BnResult<Vec<String>> {
        let wgpu = crate::device::wgpu_of(device)
            .ok_or_else(|| Error::WrongDevice(format!("{device:?} is not a wgpu device")))?;
        let ctx = crate::device::context_of(&wgpu)?;
        let options = wgpu_batchnorm::BatchNormOptions {
            eps: self.epsilon,
            momentum: self.momentum,
            affine: self.gamma.is_some(),
            track_running_stats: self.running_mean.is_some(),
        };
        let c = self.num_features();
        // The flavor only decides which input ranks a core module takes; loading ignores it.
        let mut core =
            wgpu_batchnorm::BatchNorm::new(&ctx, wgpu_batchnorm::Flavor::TwoD, c, options)?;
        let keys = wgpu_batchnorm::state_dict::load(&mut core, bytes, prefix, true)?;
        let tensor =
            |v: Vec<f32>| Tensor::<1>::from_data(burn::tensor::TensorData::new(v, [c]), device);
        if let (Some(w), Some(b)) = (core.weight()?, core.bias()?) {
            self.gamma = Some(Param::from_tensor(tensor(w)));
            self.beta = Some(Param::from_tensor(tensor(b)));
        }
        if let (Some(m), Some(v)) = (core.running_mean()?, core.running_var()?) {
            self.running_mean = Some(RunningState::new(tensor(m)));
            self.running_var = Some(RunningState::new(tensor(v)));
        }
        if let Some(n) = core.num_batches_tracked()? {
            self.num_batches_tracked = Some(RunningState::new(Tensor::from_data(
                burn::tensor::TensorData::new(vec![n as f32], [1]),
                device,
            )));
        }
        Ok(keys)
    }

    /// Whether this call normalizes with batch statistics and updates the running buffers:
    /// on a device that records gradients with the training flag on, as Burn's `BatchNorm`.
    pub fn is_training(&self, device: &Device) -> bool {
        device.is_autodiff() && self.training.is_enabled()
    }

    /// `bn(x)`; panics with the [`Error`] that [`BatchNorm::try_forward`] returns.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        self.try_forward(input).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `bn(x)`, or a typed error (wrong rank, channel count, dtype, too few values per channel
    /// in training, a device not set up for this crate) with nothing changed.
    pub fn try_forward<const D: usize>(&self, input: Tensor<D>) -> BnResult<Tensor<D>> {
        self.try_forward_residual(input, None, Activation::Identity)
    }

    /// `activation(bn(x) + residual)` in one pass; panics with the error that
    /// [`BatchNorm::try_forward_residual`] returns.
    pub fn forward_residual<const D: usize>(
        &self,
        input: Tensor<D>,
        residual: Option<Tensor<D>>,
        activation: Activation,
    ) -> Tensor<D> {
        self.try_forward_residual(input, residual, activation)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `activation(bn(x) [+ residual])` in one pass, or a typed error with nothing changed.
    /// The gradient flows to the input, the parameters and the residual.
    pub fn try_forward_residual<const D: usize>(
        &self,
        input: Tensor<D>,
        residual: Option<Tensor<D>>,
        activation: Activation,
    ) -> BnResult<Tensor<D>> {
        let device = input.device();
        let training = self.is_training(&device);
        self.check(&input, residual.as_ref(), activation, training)?;
        let tracked = self.running_mean.is_some() && self.running_var.is_some();
        let cumulative = tracked && training && self.momentum.is_none();
        let stats = match (&self.running_mean, &self.running_var) {
            (Some(mean), Some(var)) => {
                let (mean, var) = (
                    float32(mean.value_sync()).into_dispatch(),
                    float32(var.value_sync()).into_dispatch(),
                );
                if cumulative {
                    Stats::Counted {
                        mean,
                        var,
                        count: self.count_words(&device).into_dispatch(),
                    }
                } else {
                    Stats::Running { mean, var }
                }
            }
            _ => Stats::None,
        };
        let out = Dispatch::bn_forward(
            input.into_dispatch(),
            Operands {
                weight: maybe(self.gamma.as_ref().map(|p| p.val())),
                bias: maybe(self.beta.as_ref().map(|p| p.val())),
                residual: match residual {
                    Some(r) => Maybe::Some(r.into_dispatch()),
                    None => Maybe::None,
                },
                stats,
            },
            ForwardSpec {
                training,
                momentum: self.momentum,
                eps: self.epsilon,
                activation,
            },
        );
        match out.running {
            Stats::Running { mean, var } => {
                self.update_running(mean, var);
                if let Some(n) = &self.num_batches_tracked {
                    n.update(n.value_sync().add_scalar(1.0));
                }
            }
            Stats::Counted { mean, var, count } => {
                self.update_running(mean, var);
                if let Some(n) = &self.num_batches_tracked {
                    let words = Tensor::<1, Int>::from_dispatch(count);
                    n.update(words.narrow(0, 0, 1).float().cast(DType::F32));
                }
            }
            Stats::None | Stats::Batch { .. } => {}
        }
        Ok(Tensor::from_dispatch(out.output))
    }

    fn update_running(
        &self,
        mean: burn::backend::DispatchTensor,
        var: burn::backend::DispatchTensor,
    ) {
        if let (Some(m), Some(v)) = (&self.running_mean, &self.running_var) {
            m.update(Tensor::from_dispatch(mean));
            v.update(Tensor::from_dispatch(var));
        }
    }

    /// `num_batches_tracked` as the two 32-bit words (low, high) the kernels' counter reads,
    /// built by Burn on the GPU: no host round trip.
    fn count_words(&self, device: &Device) -> Tensor<1, Int> {
        let count = self
            .num_batches_tracked
            .as_ref()
            .map(|n| n.value_sync())
            .unwrap_or_else(|| Tensor::zeros([1], device));
        let low = count.int();
        let high = Tensor::<1, Int>::zeros([1], device).cast(low.dtype());
        Tensor::cat(vec![low, high], 0)
    }

    fn check<const D: usize>(
        &self,
        input: &Tensor<D>,
        residual: Option<&Tensor<D>>,
        activation: Activation,
        training: bool,
    ) -> BnResult<()> {
        let shape = input.dims();
        if !(2..=5).contains(&D) {
            return Err(Error::InvalidRank {
                module: "BatchNorm",
                expected: "2D to 5D",
                got: D,
            });
        }
        let c = self.num_features();
        if c != 0 && shape[1] != c {
            return Err(Error::ChannelMismatch {
                what: if self.running_mean.is_some() {
                    "running_mean"
                } else {
                    "weight"
                },
                input_channels: shape[1],
                num_features: c,
            });
        }
        let dtype = to_core_dtype(input.dtype(), "input")?;
        let batch_stats = training || self.running_mean.is_none();
        if batch_stats && shape.iter().product::<usize>() / shape[1].max(1) <= 1 {
            return Err(Error::TooFewValuesPerChannel {
                shape: shape.to_vec(),
            });
        }
        if batch_stats && self.epsilon <= 0.0 {
            return Err(Error::InvalidEps {
                eps: self.epsilon,
                batch_stats,
            });
        }
        if let Activation::LeakyRelu(slope) = activation
            && !slope.is_finite()
        {
            return Err(Error::InvalidArgument(format!(
                "LeakyRelu slope must be finite, got {slope}"
            )));
        }
        if let Some(r) = residual {
            if r.dims() != shape {
                return Err(Error::ShapeMismatch {
                    what: "residual (must match the input)".into(),
                    expected: shape.to_vec(),
                    got: r.dims().to_vec(),
                });
            }
            let got = to_core_dtype(r.dtype(), "residual")?;
            if got != dtype {
                return Err(Error::DTypeMismatch {
                    what: "residual".into(),
                    expected: dtype,
                    got,
                });
            }
            if r.device() != input.device() {
                return Err(Error::WrongDevice(
                    "the residual is on another device than the input".into(),
                ));
            }
        }
        match crate::device::wgpu_of(&input.device()) {
            Some(device) => crate::device::lookup(&device).map(|_| ()),
            None => Err(Error::WrongDevice(format!(
                "{:?} is not a wgpu device",
                input.device()
            ))),
        }
    }
}

fn to_core_dtype(dtype: DType, what: &str) -> BnResult<wgpu_batchnorm::DType> {
    match dtype {
        DType::F32 => Ok(wgpu_batchnorm::DType::F32),
        DType::F16 => Ok(wgpu_batchnorm::DType::F16),
        other => Err(Error::InvalidArgument(format!(
            "{what} has dtype {other:?}; the kernels take f32 and f16"
        ))),
    }
}
