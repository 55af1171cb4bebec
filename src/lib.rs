//! # wgpu-batchnorm
//!
//! PyTorch-exact `nn.BatchNorm1d/2d/3d` on any GPU, through wgpu and WGSL compute shaders:
//! training mode (batch statistics, biased variance) and eval mode (running statistics),
//! running-stat updates with momentum or a cumulative average, `affine`,
//! `track_running_stats`, `eps`.
//!
//! ```no_run
//! use wgpu_batchnorm::{BatchNorm1d, Context, Tensor};
//!
//! let ctx = Context::new()?; // honours WGPU_BACKEND and WGPU_ADAPTER_NAME
//! let mut bn = BatchNorm1d::new(&ctx, 3)?; // nn.BatchNorm1d(3)
//! let x = Tensor::from_slice(&ctx, &[1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12.], &[4, 3])?;
//! let y = bn.forward(&x)?.to_host()?; // bn(x)
//! let running_mean = bn.running_mean()?; // bn.running_mean
//! # Ok::<(), wgpu_batchnorm::Error>(())
//! ```
//!
//! Users who own a device wrap it with [`Context::from_device`] and record work into their own
//! encoder with [`BatchNorm::encode_forward`]; encode-only calls submit nothing and wait on
//! nothing.
//!
//! Backward: [`BatchNorm::backward`] (or [`BatchNorm::encode_backward`]) differentiates the
//! last forward; [`BatchNorm::forward_saved`] returns a [`Saved`] handle for
//! [`BatchNorm::backward_saved`] when a module is applied more than once per step.
//! [`functional`] is the layer under the module, on caller-owned tensors, for framework
//! authors.
//!
//! How it runs: a statistics pass writes Welford partials (count, mean, M2), a small pass merges
//! them per channel with Chan's formula (never `E[x^2] - E[x]^2`), one fused pass computes
//! `y = (x - mean) * (invstd * weight) + bias`, and a separate one-workgroup dispatch updates
//! the running statistics. Tensors of many short channels (`(N, C)`, 7x7 planes,
//! channels-last with few rows) take a training forward of one dispatch instead (an
//! invocation per channel, or per four neighbouring channels read as a vec4 where planes hold
//! one value; the running update in the same dispatch where a momentum is given), and a
//! training backward of one dispatch (through the fused epilogue too, where the device allows
//! its 11 storage buffers). Each tensor kernel walks its data one of three ways, chosen per
//! shape: plane segments per workgroup (planes of at least 64 items), runs of 8 invocations per
//! plane (8 to 63 items: 14x14 and 7x7 planes), or one item column per invocation (fewer than 8
//! items, e.g. `(N, C)`). Tensors larger than one storage binding are processed in windows.
//! README's "How it works" maps each kernel to its host module, shader and CPU oracle;
//! `BENCHMARKS.md` has the measured speed.

#![warn(missing_docs)]

mod activation;
mod batchnorm;
#[cfg(not(target_arch = "wasm32"))]
pub mod collective;
// Native only: it times with `std::time::Instant`, which the browser target lacks.
#[cfg(all(feature = "bench", not(target_arch = "wasm32")))]
pub mod bench;
mod device;
mod dtype;
mod error;
pub mod fold;
pub mod functional;
mod module;
mod ops;
pub mod optim;
pub mod planner;
pub mod profile;
pub mod reference;
pub mod state_dict;
pub mod sync;
#[cfg(not(target_arch = "wasm32"))]
mod syncbn;
mod tensor;
#[doc(hidden)]
pub mod testing;
mod workspace;

pub use activation::Activation;
pub use batchnorm::{
    BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormOptions, Flavor, ModuleTensors,
};
pub use device::{AdapterReport, Context, ContextOptions, DEFAULT_WAIT_TIMEOUT};
pub use dtype::{DType, MemoryFormat};
pub use error::{Error, Result};
pub use functional::{
    BackwardArgs, FoldArgs, ForwardArgs, Functional, GlobalStats, LocalStatsArgs, RunningStats,
    SavedStats,
};
/// The `half` crate, whose `f16` type f16 tensors are uploaded from and read back as.
pub use half;
pub use module::{BackwardCall, BackwardInto, ForwardCall, GradOutputs, Gradients, Saved};
#[doc(hidden)]
pub use profile::PassPlan;
#[doc(hidden)]
pub use profile::Walk;
#[cfg(not(target_arch = "wasm32"))]
pub use syncbn::SyncBatchNorm;
pub use tensor::{BatchCounter, Tensor, TENSOR_USAGE};

/// The README's code blocks, compiled as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Re-export of the wgpu version this crate is built on.
pub use wgpu;
