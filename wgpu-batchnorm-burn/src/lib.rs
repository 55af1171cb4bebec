//! PyTorch-exact batch normalization as a Burn module, running
//! [`wgpu-batchnorm`](wgpu_batchnorm)'s kernels on Burn's own wgpu buffers.
//!
//! - [`BatchNorm`] / [`BatchNormConfig`]: the module, a one-type swap for
//!   `burn::nn::BatchNorm` (its records load), with PyTorch's options.
//! - [`ops::BatchNormOps`]: the backend extension behind it, for Burn's wgpu `CubeBackend`,
//!   its `Fusion` wrapper (an opaque op in the fusion stream) and `Autodiff` (the backward
//!   runs this crate's backward kernels).
//! - [`share_burn_device`], [`new_shared_device`], [`burn_device_from_wgpu`]: one device for
//!   Burn and the kernels.
//!
//! ```no_run
//! use burn::tensor::{Device, Distribution, Tensor};
//! use wgpu_batchnorm_burn::{Activation, BatchNormConfig};
//!
//! let (wgpu_device, _ctx) = wgpu_batchnorm_burn::new_shared_device()?;
//! let device = Device::new(wgpu_device).autodiff();
//! let bn = BatchNormConfig::new(8).with_momentum(None).init(&device);
//! let x = Tensor::<4>::random([4, 8, 16, 16], Distribution::Normal(0.0, 1.0), &device).require_grad();
//! let y = bn.try_forward_residual(x.clone(), None, Activation::Relu)?; // relu(bn(x)), one pass
//! let grads = y.sum().backward();
//! let dx = x.grad(&grads).expect("x is tracked");
//! let dgamma = bn.gamma.as_ref().unwrap().val().grad(&grads);
//! # let _ = (dx, dgamma);
//! # Ok::<(), wgpu_batchnorm::Error>(())
//! ```

mod autodiff;
mod cube;
mod device;
#[cfg(feature = "fusion")]
mod meta;
mod module;
pub mod ops;

pub use device::{
    burn_device_from_wgpu, context_of, new_shared_device, share_burn_device, wgpu_of,
};
pub use module::{BatchNorm, BatchNormConfig};
pub use wgpu_batchnorm::{Activation, Error, Result};
