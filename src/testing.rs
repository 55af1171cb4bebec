//! What tests and benchmarks use to pin and observe the planner, in one place; not needed
//! to use the crate.
//!
//! - [`Forced`], set through [`crate::ContextOptions::forced`], pins the walk or the pass plan
//!   where it can serve the shape, so that tests cover each on any device.
//! - [`Probes`] asks a context what the planner picks for a shape, and how many pipelines it
//!   has compiled; [`Counters`] asks a module or a functional layer what it has created and
//!   recorded (the steady-state tests: repeated calls on the same shapes create nothing).
//!
//! ```no_run
//! use wgpu_batchnorm::testing::{Counters, Forced, Probes};
//! use wgpu_batchnorm::{BatchNorm1d, Context, ContextOptions, PassPlan, Tensor};
//! let ctx = Context::with_options(ContextOptions {
//!     forced: Forced { pass_plan: Some(PassPlan::MultiPass), ..Forced::default() },
//!     ..ContextOptions::from_env()
//! })?;
//! assert_eq!(ctx.planned_pass_plan(&[256, 1024]), Some(PassPlan::MultiPass));
//! let mut bn = BatchNorm1d::new(&ctx, 1024)?;
//! let x = Tensor::from_slice(&ctx, &vec![1.0; 256 * 1024], &[256, 1024])?;
//! bn.forward(&x)?;
//! let made = (bn.buffers_created(), ctx.pipelines_created());
//! bn.forward(&x)?;
//! assert_eq!((bn.buffers_created(), ctx.pipelines_created()), made);
//! # Ok::<(), wgpu_batchnorm::Error>(())
//! ```

use crate::batchnorm::BatchNorm;
use crate::device::Context;
use crate::functional::Functional;
pub use crate::profile::Forced;
use crate::profile::{PassPlan, Walk};

/// What a context's planner picks, and what it has compiled.
pub trait Probes {
    /// The walk the tensor kernels use for an input of `shape` bound from 16-byte aligned
    /// offsets.
    fn planned_walk(&self, shape: &[usize]) -> Option<Walk>;
    /// The pass plan a training forward (and its backward without an epilogue) of a
    /// contiguous f32 tensor of `shape`, bound whole, takes.
    fn planned_pass_plan(&self, shape: &[usize]) -> Option<PassPlan>;
    /// How many compute pipelines the context has compiled so far (each kernel variant once).
    fn pipelines_created(&self) -> usize;
}

/// (N, C, S) of `shape`, each within u32.
fn geometry(shape: &[usize]) -> Option<(u32, u32, u32)> {
    let n = u32::try_from(*shape.first()?).ok()?;
    let c = u32::try_from(*shape.get(1)?).ok()?;
    let s = u32::try_from(shape[2..].iter().product::<usize>()).ok()?;
    Some((n, c, s))
}

impl Probes for Context {
    fn planned_walk(&self, shape: &[usize]) -> Option<Walk> {
        let (n, c, s) = geometry(shape)?;
        (n > 0 && c > 0 && s > 0).then(|| crate::workspace::planned_walk(self, n, c, s, true))
    }

    fn planned_pass_plan(&self, shape: &[usize]) -> Option<PassPlan> {
        let how = crate::ops::forward_single::single_pass(
            geometry(shape)?,
            crate::DType::F32,
            self.profile(),
            self.forced_pass_plan(),
        );
        Some(match how {
            None => PassPlan::MultiPass,
            Some(t) if t.own_channel => PassPlan::InvocationPerChannel,
            Some(_) => PassPlan::WorkgroupPerChannel,
        })
    }

    fn pipelines_created(&self) -> usize {
        self.compiled().created()
    }
}

/// What a module or a functional layer has created and recorded.
pub trait Counters {
    /// GPU buffers created so far (a module's parameters excluded).
    fn buffers_created(&self) -> usize;
    /// Bind groups kept cached.
    fn cached_bind_groups(&self) -> usize;
    /// Dispatches, and the workgroups they launch, recorded so far (tests hold
    /// [`crate::Context::plan_call`]'s descriptions against them).
    fn dispatches_recorded(&self) -> (u64, u64);
}

impl Counters for Functional {
    fn buffers_created(&self) -> usize {
        self.workspace().buffers_created()
    }

    fn cached_bind_groups(&self) -> usize {
        self.workspace().cached_bind_groups()
    }

    fn dispatches_recorded(&self) -> (u64, u64) {
        let t = self.workspace().tally();
        (t.dispatches, t.workgroups)
    }
}

impl Counters for BatchNorm {
    fn buffers_created(&self) -> usize {
        self.buffers_made()
    }

    fn cached_bind_groups(&self) -> usize {
        self.functional().cached_bind_groups()
    }

    fn dispatches_recorded(&self) -> (u64, u64) {
        self.functional().dispatches_recorded()
    }
}
