//! The functional layer: batch norm on caller-owned tensors, like
//! `torch.nn.functional.batch_norm` and aten's `native_batch_norm` /
//! `native_batch_norm_backward`. [`crate::BatchNorm`] is built on it; a framework author can
//! build their own module the same way.
//!
//! [`Functional`] holds the scratch space and caches (create one per stream of calls and reuse
//! it). A call is described by its arguments struct (a [`Call`]: [`ForwardArgs`],
//! [`BackwardArgs`], [`FoldArgs`], [`LocalStatsArgs`]) and runs one of three ways:
//! [`Functional::encode`] records into the caller's `wgpu::CommandEncoder` and waits on
//! nothing, [`Functional::run_async`] submits and awaits, [`Functional::run`] blocks.
//!
//! ```no_run
//! use wgpu_batchnorm::{BackwardArgs, Context, ForwardArgs, Functional, RunningStats, SavedStats, Tensor};
//! let ctx = Context::new()?;
//! let x = Tensor::from_slice(&ctx, &[1., 2., 3., 4., 5., 6., 7., 8.], &[4, 2])?;
//! let y = Tensor::empty(&ctx, &[4, 2])?;
//! let (mean, invstd) = (Tensor::empty(&ctx, &[2])?, Tensor::empty(&ctx, &[2])?);
//! let running_mean = Tensor::from_slice(&ctx, &[0.0; 2], &[2])?;
//! let running_var = Tensor::from_slice(&ctx, &[1.0; 2], &[2])?;
//! let mut f = Functional::new(&ctx);
//! // F.batch_norm(x, running_mean, running_var, training=True): no weight, no bias.
//! f.run(&ForwardArgs {
//!     running: Some(RunningStats { mean: &running_mean, var: &running_var, num_batches_tracked: None }),
//!     save_mean: Some(&mean),
//!     save_invstd: Some(&invstd),
//!     ..ForwardArgs::new(&x, &y)
//! })?;
//! let dy = Tensor::from_slice(&ctx, &[1.0; 8], &[4, 2])?;
//! let dx = Tensor::empty(&ctx, &[4, 2])?;
//! f.run(&BackwardArgs {
//!     stats: SavedStats::Batch { save_mean: &mean, save_invstd: &invstd },
//!     grad_input: Some(&dx),
//!     ..BackwardArgs::new(&x, &dy)
//! })?;
//! # Ok::<(), wgpu_batchnorm::Error>(())
//! ```
//!
//! Encode-only calls do not open error scopes (popping one would wait on the host): a wgpu
//! validation error in them surfaces where the caller submits, through the device's
//! uncaptured-error handler. Every check this crate makes happens before anything is
//! recorded, and a rejected call records nothing.

mod args;
mod backward;
mod f16;
mod fold;
mod forward;
mod stats;
mod validate;

pub use args::{BackwardArgs, FoldArgs, ForwardArgs, GlobalStats, RunningStats, SavedStats};
pub use stats::{LocalStats, LocalStatsArgs, MergedStats, UploadedStats};
pub(crate) use validate::ForwardWork;

#[cfg(not(target_arch = "wasm32"))]
use crate::device::block_on;
use crate::device::Context;
use crate::error::Result;
use crate::workspace::Workspace;

/// Batch norm on caller-owned tensors, with its own scratch space and caches.
#[derive(Debug)]
pub struct Functional {
    ctx: Context,
    ws: Workspace,
}

impl Functional {
    /// A functional runner for `ctx`.
    pub fn new(ctx: &Context) -> Self {
        Functional {
            ctx: ctx.clone(),
            ws: Workspace::new(ctx),
        }
    }

    /// The context this runner records for.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The scratch space and caches (the testing counters read them).
    pub(crate) fn workspace(&self) -> &Workspace {
        &self.ws
    }

    /// Checks `call` and records it into `encoder`: no submit, no wait. See the module docs
    /// for when device errors surface.
    pub fn encode(&mut self, encoder: &mut wgpu::CommandEncoder, call: &impl Call) -> Result<()> {
        call.record(self, encoder)
    }

    /// Checks `call`, records it, submits it and waits for it without blocking the thread
    /// (the only form on the web).
    pub async fn run_async(&mut self, call: &impl Call) -> Result<()> {
        let ctx = self.ctx.clone();
        ctx.run_async(|encoder| call.record(self, encoder)).await
    }

    /// [`Functional::run_async`], blocking until the device is done. Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run(&mut self, call: &impl Call) -> Result<()> {
        block_on(self.run_async(call))
    }
}

/// A functional call, described by its arguments: [`ForwardArgs`] (`F.batch_norm`),
/// [`BackwardArgs`] (`native_batch_norm_backward`), [`FoldArgs`] (the eval fold) and
/// [`LocalStatsArgs`] (a device's SyncBN statistics). [`Functional::encode`],
/// [`Functional::run`] and [`Functional::run_async`] take any of them; each is checked once,
/// before anything is recorded, and a rejected call records nothing.
pub trait Call: sealed::Sealed {
    /// Checks the call and records it.
    #[doc(hidden)]
    fn record(&self, f: &mut Functional, encoder: &mut wgpu::CommandEncoder) -> Result<()>;
}

mod sealed {
    /// Only this crate's argument structs are calls.
    pub trait Sealed {}
    impl Sealed for super::ForwardArgs<'_> {}
    impl Sealed for super::BackwardArgs<'_> {}
    impl Sealed for super::FoldArgs<'_> {}
    impl Sealed for super::LocalStatsArgs<'_> {}
}
