//! What every module needs apart from its own options and checks: the handle of one forward
//! for its backward ([`Saved`]), the statistics buffers reused across forwards
//! ([`SavedState`]), where a backward writes ([`GradOutputs`]) and what it returns
//! ([`Gradients`]), and the call descriptions with their submitting and blocking forms
//! (`call`: [`ForwardCall`], [`BackwardCall`]).

mod call;

use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) use call::Recordable;
pub use call::{BackwardCall, BackwardInto, ForwardCall};

use crate::activation::Activation;
use crate::device::{Context, Shared};
use crate::error::Result;
use crate::tensor::Tensor;

/// A module identity, unique in the process (saved handles and optimizer state are keyed by
/// it).
pub(crate) fn next_module_id() -> u64 {
    NEXT_MODULE_ID.fetch_add(1, Ordering::Relaxed)
}

static NEXT_MODULE_ID: AtomicU64 = AtomicU64::new(1);

/// A pair of `[C]` tensors for one forward's batch statistics, shared with the [`Saved`]
/// handles that refer to it; reused once no handle does.
#[derive(Debug)]
pub(crate) struct SavedBuffers {
    pub(crate) mean: Tensor,
    pub(crate) invstd: Tensor,
}

/// What a module's backward needs from one forward, like autograd's saved tensors: returned by
/// every forward call ([`ForwardCall`], [`BatchNorm::forward_saved`](crate::BatchNorm::forward_saved)),
/// taken by [`BackwardCall::saved`] and [`BatchNorm::backward_saved`](crate::BatchNorm::backward_saved).
/// It keeps the forward's input and statistics alive, so one module applied twice in a step
/// can differentiate both applications.
#[derive(Clone, Debug)]
pub struct Saved {
    pub(crate) module: u64,
    pub(crate) x: Tensor,
    /// The batch statistics, or None when the forward used the running statistics.
    pub(crate) batch: Option<Shared<SavedBuffers>>,
    pub(crate) training: bool,
    pub(crate) version: u64,
    pub(crate) activation: Activation,
    pub(crate) residual: Option<Tensor>,
}

impl Saved {
    /// The forward's batch mean (`save_mean`), if it used batch statistics.
    pub fn save_mean(&self) -> Option<&Tensor> {
        self.batch.as_ref().map(|b| &b.mean)
    }

    /// The forward's `save_invstd`, if it used batch statistics.
    pub fn save_invstd(&self) -> Option<&Tensor> {
        self.batch.as_ref().map(|b| &b.invstd)
    }

    /// The forward's input.
    pub fn input(&self) -> &Tensor {
        &self.x
    }
}

/// Where a backward writes its gradients; every one is optional (see
/// [`BackwardCall::outputs`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct GradOutputs<'a> {
    /// dL/dx, the shape and memory format of the forward's input.
    pub grad_input: Option<&'a Tensor>,
    /// dL/dweight, `[C]` (affine modules only).
    pub grad_weight: Option<&'a Tensor>,
    /// dL/dbias, `[C]` (affine modules only).
    pub grad_bias: Option<&'a Tensor>,
    /// dL/dresidual, like grad_input (forwards given a residual only).
    pub grad_residual: Option<&'a Tensor>,
}

/// Gradients returned by [`BatchNorm::backward`](crate::BatchNorm::backward).
#[derive(Clone, Debug)]
pub struct Gradients {
    /// dL/dx, the shape of the forward input.
    pub grad_input: Tensor,
    /// dL/dweight, shape `[C]` (None when affine = false).
    pub grad_weight: Option<Tensor>,
    /// dL/dbias, shape `[C]` (None when affine = false).
    pub grad_bias: Option<Tensor>,
    /// dL/dresidual (None when the forward was given no residual).
    pub grad_residual: Option<Tensor>,
}

impl Gradients {
    /// These tensors as where a backward writes.
    pub(crate) fn as_outputs(&self) -> GradOutputs<'_> {
        GradOutputs {
            grad_input: Some(&self.grad_input),
            grad_weight: self.grad_weight.as_ref(),
            grad_bias: self.grad_bias.as_ref(),
            grad_residual: self.grad_residual.as_ref(),
        }
    }
}

/// The last forward's references, released while a new forward picks its buffers (see
/// [`SavedState::release`]); the buffers are named by identity, not held.
pub(crate) struct Previous {
    forward: Option<Saved>,
    forward_batch: Option<*const SavedBuffers>,
    batch: Option<*const SavedBuffers>,
}

/// A module's statistics buffers and what its backward may still read: the buffers of earlier
/// forwards (reused once no [`Saved`] refers to them), the last forward and the last batch
/// statistics. Any module that saves batch statistics for its backward keeps one.
#[derive(Debug, Default)]
pub(crate) struct SavedState {
    /// Statistics buffers of earlier forwards, reused when no [`Saved`] refers to them.
    pool: Vec<Shared<SavedBuffers>>,
    /// What `backward` (without a handle) differentiates.
    pub(crate) last_forward: Option<Saved>,
    /// The statistics of the last forward that used batch statistics (`save_mean()`).
    pub(crate) last_batch: Option<Shared<SavedBuffers>>,
}

impl SavedState {
    /// Statistics buffers no [`Saved`] refers to, or new ones.
    pub(crate) fn buffers(&mut self, ctx: &Context, c: usize) -> Result<Shared<SavedBuffers>> {
        if let Some(b) = self.pool.iter().find(|b| Shared::strong_count(b) == 1) {
            return Ok(b.clone());
        }
        // Unscoped: this runs in encode-only calls too, which wait on nothing.
        let b = Shared::new(SavedBuffers {
            mean: Tensor::empty_unscoped(ctx, &[c])?,
            invstd: Tensor::empty_unscoped(ctx, &[c])?,
        });
        self.pool.push(b.clone());
        Ok(b)
    }

    /// Drops this module's references to the last forward (and, when `batch_stats`, to the
    /// last batch statistics) so that their buffers can be reused, remembering them by
    /// identity for [`SavedState::restore`].
    pub(crate) fn release(&mut self, batch_stats: bool) -> Previous {
        let ptr = |b: &Shared<SavedBuffers>| Shared::as_ptr(b);
        let mut forward = self.last_forward.take();
        let forward_batch = forward
            .as_mut()
            .and_then(|f| f.batch.take())
            .map(|b| ptr(&b));
        let batch = if batch_stats {
            self.last_batch.take().map(|b| ptr(&b))
        } else {
            None
        };
        Previous {
            forward,
            forward_batch,
            batch,
        }
    }

    /// Undoes [`SavedState::release`] after a forward that recorded nothing: the pool
    /// still owns the buffers, and nothing was submitted that could have written them.
    pub(crate) fn restore(&mut self, previous: Previous) {
        let find = |p: Option<*const SavedBuffers>| {
            p.and_then(|p| self.pool.iter().find(|b| Shared::as_ptr(b) == p).cloned())
        };
        let forward_batch = find(previous.forward_batch);
        if previous.batch.is_some() {
            self.last_batch = find(previous.batch);
        }
        self.last_forward = previous.forward.map(|mut f| {
            f.batch = forward_batch;
            f
        });
    }

    /// After a forward the device failed to run: nothing is left for `backward` or
    /// `save_mean` to use, since its statistics buffers may hold a partial result.
    pub(crate) fn forget(&mut self) {
        self.last_forward = None;
        self.last_batch = None;
    }

    /// Statistics buffers made so far (steady-state checks).
    pub(crate) fn buffers_made(&self) -> usize {
        self.pool.len()
    }
}
