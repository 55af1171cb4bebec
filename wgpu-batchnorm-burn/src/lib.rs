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
