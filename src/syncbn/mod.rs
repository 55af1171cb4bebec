//! `SyncBatchNorm`: PyTorch's `nn.SyncBatchNorm` over any [`Collective`] group (threads in one
//! process with [`crate::collective::LocalGroup`], processes on one host or many with
//! `MpiGroup` over MPI).
//!
//! A training forward exchanges each rank's per-channel (count, mean, M2) in one all-gather
//! and merges them with Chan's formula in rank order, in f64: every rank normalizes with
//! bit-identical statistics and updates its running statistics identically (unbiased variance
//! from the group's count). A training backward exchanges each rank's `sum(dz)` and
//! `sum(dz * xhat)` in one all-gather, adds them in rank order (so the result does not depend
//! on the MPI library's reduction order) and computes `grad_input` from the group's sums;
//! `grad_weight` and `grad_bias` stay the rank's own, as PyTorch leaves them for data-parallel
//! averaging ([`SyncBatchNorm::sum_param_grads`] adds them over the group for those who want
//! the global ones). Eval mode, and a group of one, exchange nothing: the module runs as the
//! [`BatchNorm`] it wraps.
//!
//! Every message carries a header (format version, the module's call counter, `num_features`,
//! the options that must agree) that every rank checks against every other rank's. A rank
//! whose call is invalid (wrong rank or channel count, another module than its peers', a call
//! sequence out of step) still joins the exchange, with its reason: every rank then returns
//! the same [`Error::Rank`] naming it, from the same exchange, and no rank's module changes. A
//! program that calls the module on some ranks and not others cannot be saved by any header:
//! the others wait for it (set `MPIEXEC_TIMEOUT` so that such a job ends). A rank in eval mode
//! while its peers train is such a program: eval exchanges nothing. The bytes per
//! exchange: see the `message` module (`8 * (9 + 2C)` per rank and direction).
//!
//! Native only: the exchange blocks.
//!
//! ```no_run
//! use wgpu_batchnorm::collective::LocalGroup;
//! use wgpu_batchnorm::{BatchNorm2d, Context, SyncBatchNorm, Tensor};
//! // Two ranks as two threads, each with its own device and half of the batch.
//! std::thread::scope(|s| {
//!     for group in LocalGroup::new(2) {
//!         s.spawn(move || -> wgpu_batchnorm::Result<()> {
//!             let ctx = Context::new()?;
//!             let mut bn = SyncBatchNorm::new(BatchNorm2d::new(&ctx, 3)?, group)?;
//!             let x = Tensor::from_slice(&ctx, &vec![1.0; 2 * 3 * 4 * 4], &[2, 3, 4, 4])?;
//!             let y = bn.forward(&x)?; // statistics over both ranks' batches
//!             let grads = bn.backward(&Tensor::from_slice(&ctx, &vec![0.5; 96], &[2, 3, 4, 4])?)?;
//!             bn.sum_param_grads(&grads)?; // grad_weight, grad_bias of the whole batch
//!             Ok(())
//!         });
//!     }
//! });
//! ```

mod message;

use message::{Agreement, Kind};

use crate::batchnorm::BatchNorm;
use crate::collective::Collective;
use crate::error::{Error, Result};
use crate::module::{Gradients, Recordable, Saved};
use crate::sync::{backward_coefficients, merge_stats, LocalStats};
use crate::tensor::Tensor;

/// Batch normalization whose batch statistics cover every rank's batch; see the module docs.
pub struct SyncBatchNorm {
    bn: BatchNorm,
    group: Box<dyn Collective>,
    /// Exchanges this module has joined (every rank counts the same).
    calls: u64,
    /// `[C]`: the group's M2 for the running update.
    m2: Tensor,
    /// `[C]` each: this rank's backward sums.
    sum_dz_xhat: Tensor,
    sum_dz: Tensor,
    /// `[2C]`: the group's backward coefficients.
    coefficients: Tensor,
}

impl std::fmt::Debug for SyncBatchNorm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncBatchNorm")
            .field("module", &self.bn)
            .field("rank", &self.group.rank())
            .field("size", &self.group.size())
            .field("calls", &self.calls)
            .finish()
    }
}

/// The wrapped module's getters under PyTorch's names (`running_mean()`, `weight()`,
/// `num_batches_tracked()`, `tensors()`, ...); calls that change it go through
/// [`SyncBatchNorm::module_mut`].
impl std::ops::Deref for SyncBatchNorm {
    type Target = BatchNorm;

    fn deref(&self) -> &BatchNorm {
        &self.bn
    }
}

impl SyncBatchNorm {
    /// `bn` (its parameters, buffers, options and mode kept) synchronised over `group`, like
    /// `nn.SyncBatchNorm.convert_sync_batchnorm` on one layer; [`SyncBatchNorm::into_inner`]
    /// gives it back.
    pub fn new(bn: BatchNorm, group: impl Collective + 'static) -> Result<Self> {
        let ctx = bn.context().clone();
        let c = bn.num_features();
        Ok(SyncBatchNorm {
            m2: Tensor::empty(&ctx, &[c])?,
            sum_dz_xhat: Tensor::empty(&ctx, &[c])?,
            sum_dz: Tensor::empty(&ctx, &[c])?,
            coefficients: Tensor::empty(&ctx, &[2 * c])?,
            bn,
            group: Box::new(group),
            calls: 0,
        })
    }

    /// The wrapped module: its parameters, buffers and options.
    pub fn module(&self) -> &BatchNorm {
        &self.bn
    }

    /// The wrapped module, for its setters. Its own forward and backward run on this rank
    /// alone.
    pub fn module_mut(&mut self) -> &mut BatchNorm {
        &mut self.bn
    }

    /// The wrapped module.
    pub fn into_inner(self) -> BatchNorm {
        self.bn
    }

    /// This rank and the group's size.
    pub fn rank_and_size(&self) -> (usize, usize) {
        (self.group.rank(), self.group.size())
    }

    /// Training mode (`module.train()`): forwards and backwards synchronise.
    pub fn train(&mut self) -> &mut Self {
        self.bn.train();
        self
    }

    /// Eval mode (`module.eval()`): nothing is exchanged.
    pub fn eval(&mut self) -> &mut Self {
        self.bn.eval();
        self
    }

    /// Whether calls exchange with the group (PyTorch's `need_sync`: training, more than one
    /// rank).
    fn syncs(&self) -> bool {
        self.bn.is_training() && self.group.size() > 1
    }

    fn agreement(&self, kind: Kind) -> Agreement {
        Agreement {
            kind,
            call: self.calls,
            num_features: self.bn.num_features(),
            options: self.bn.options(),
        }
    }

    /// Sends this rank's `payload` (or the reason its call is invalid) and checks every
    /// rank's header: every rank's payload in rank order, or the same error on every rank.
    fn exchange(
        &mut self,
        kind: Kind,
        payload: std::result::Result<&[f64], &Error>,
    ) -> Result<Vec<Vec<f64>>> {
        let message = message::encode(&self.agreement(kind), payload);
        let all = self.group.all_gather(&message);
        // Every rank joined this exchange, whatever its outcome.
        self.calls += 1;
        let all = all?;
        Ok(message::check(&all)?
            .into_iter()
            .map(<[f64]>::to_vec)
            .collect())
    }

    /// `bn(x)` over the group's batch; blocks until done.
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_call(x, None)?.0)
    }

    /// [`SyncBatchNorm::forward`], also returning the handle for
    /// [`SyncBatchNorm::backward_saved`].
    pub fn forward_saved(&mut self, x: &Tensor) -> Result<(Tensor, Saved)> {
        self.forward_call(x, None)
    }

    /// `act(bn(x) + residual)` with the module's activation, in one pass.
    pub fn forward_residual(&mut self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        Ok(self.forward_call(x, Some(residual))?.0)
    }

    fn forward_call(&mut self, x: &Tensor, residual: Option<&Tensor>) -> Result<(Tensor, Saved)> {
        if !self.syncs() {
            return self.bn.forward_with(x).residual(residual).run();
        }
        let y = self.bn.forward_output(x);
        // This rank's share, or why it has none: checked before anything changes.
        let local = y.and_then(|y| {
            self.bn
                .check_forward_call(x, residual, &y, Some((&self.m2, 2)))?;
            let local = crate::device::block_on(self.bn.local_stats_async(x))?;
            Ok((y, local))
        });
        let payload = local.as_ref().map(|(_, l)| {
            let mut p = vec![l.count as f64];
            p.extend(l.mean.iter().chain(&l.m2).map(|&v| f64::from(v)));
            p
        });
        let all = self.exchange(Kind::Forward, payload.as_deref().map_err(|e| *e))?;
        let c = self.bn.num_features();
        let parts = all
            .iter()
            .enumerate()
            .map(|(rank, p)| {
                let (count, mean, m2) = message::count_and_pair(rank, p, c)?;
                Ok(LocalStats {
                    count,
                    mean: mean.iter().map(|&v| v as f32).collect(),
                    m2: m2.iter().map(|&v| v as f32).collect(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let merged = merge_stats(&parts, self.bn.eps())?;
        // Every rank reaches here with the same statistics; the local checks passed.
        let (y, _) = local?;
        self.bn.group.stats = Some((merged, self.m2.clone()));
        let out = self.bn.forward_with(x).residual(residual).output(&y).run();
        self.bn.group.stats = None;
        out
    }

    /// Gradients of the last forward for `grad_output`, `grad_input` from the group's sums;
    /// blocks until done.
    pub fn backward(&mut self, grad_output: &Tensor) -> Result<Gradients> {
        let saved = self.bn.last_forward();
        self.backward_call(saved, grad_output)
    }

    /// Gradients of the forward that returned `saved`.
    pub fn backward_saved(&mut self, saved: &Saved, grad_output: &Tensor) -> Result<Gradients> {
        self.backward_call(Ok(saved.clone()), grad_output)
    }

    fn backward_call(&mut self, saved: Result<Saved>, grad_output: &Tensor) -> Result<Gradients> {
        // An eval forward (running statistics) differentiates locally; a training one with
        // batch statistics synchronises, as its forward did.
        let local_only = |s: &Saved| s.batch.is_none() || !s.training;
        if !self.syncs() || saved.as_ref().is_ok_and(local_only) {
            let saved = saved?;
            return self.bn.backward_with(grad_output).saved(&saved).run();
        }
        let local = saved.and_then(|saved| {
            let grads = self.bn.backward_outputs(&saved)?;
            self.bn
                .check_backward_call(&saved, grad_output, grads.as_outputs())?;
            crate::device::block_on(self.bn.backward_sums_async(
                &saved,
                grad_output,
                &self.sum_dz_xhat,
                &self.sum_dz,
            ))?;
            let sum_dz = self.sum_dz.to_host()?;
            let sum_dz_xhat = self.sum_dz_xhat.to_host()?;
            let count = (saved.x.numel() / saved.x.shape()[1].max(1)) as u64;
            Ok((saved, grads, count, sum_dz, sum_dz_xhat))
        });
        let payload = local.as_ref().map(|(_, _, count, dz, dz_xhat)| {
            let mut p = vec![*count as f64];
            p.extend(dz.iter().chain(dz_xhat).map(|&v| f64::from(v)));
            p
        });
        let all = self.exchange(Kind::Backward, payload.as_deref().map_err(|e| *e))?;
        let c = self.bn.num_features();
        let (mut count, mut sum_dz, mut sum_dz_xhat) = (0u64, vec![0.0f64; c], vec![0.0f64; c]);
        for (rank, p) in all.iter().enumerate() {
            let (n, dz, dz_xhat) = message::count_and_pair(rank, p, c)?;
            count = count.saturating_add(n);
            for ch in 0..c {
                sum_dz[ch] += dz[ch];
                sum_dz_xhat[ch] += dz_xhat[ch];
            }
        }
        let narrow = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<_>>();
        let k = backward_coefficients(&narrow(sum_dz_xhat), &narrow(sum_dz), count);
        let (saved, grads, ..) = local?;
        let ctx = self.bn.context().clone();
        ctx.queue().write_buffer(
            self.coefficients.buffer(),
            self.coefficients.offset(),
            bytemuck::cast_slice(&k),
        );
        self.bn.group.coefficients = Some(self.coefficients.clone());
        let out = self
            .bn
            .backward_with(grad_output)
            .saved(&saved)
            .outputs(grads.as_outputs())
            .run();
        self.bn.group.coefficients = None;
        out.map(|()| grads)
    }

    /// Adds `grads.grad_weight` and `grads.grad_bias` over the group (in rank order, in f64)
    /// and writes the sums back into them: the whole batch's parameter gradients, which
    /// PyTorch's SyncBatchNorm leaves to data-parallel averaging. Every rank calls it.
    pub fn sum_param_grads(&mut self, grads: &Gradients) -> Result<()> {
        let c = self.bn.num_features();
        let params = [grads.grad_weight.as_ref(), grads.grad_bias.as_ref()];
        let local = params
            .iter()
            .flatten()
            .map(|t| {
                t.expect_shape("grad_weight / grad_bias", &[c])?;
                t.to_host()
            })
            .collect::<Result<Vec<_>>>();
        let payload = local.as_ref().map(|v| {
            v.iter()
                .flatten()
                .map(|&x| f64::from(x))
                .collect::<Vec<f64>>()
        });
        let all = self.exchange(Kind::ParamGrads, payload.as_deref().map_err(|e| *e))?;
        let len = local.as_ref().map_or(0, |v| v.len() * c);
        let mut total = vec![0.0f64; len];
        for (rank, p) in all.iter().enumerate() {
            if p.len() != len {
                return Err(Error::Rank {
                    rank,
                    reason: format!("sent {} parameter gradients, this rank {len}", p.len()),
                });
            }
            for (t, v) in total.iter_mut().zip(p) {
                *t += v;
            }
        }
        let total: Vec<f32> = total.into_iter().map(|v| v as f32).collect();
        for (t, sums) in params.iter().flatten().zip(total.chunks(c.max(1))) {
            t.write(self.bn.context(), sums)?;
        }
        Ok(())
    }
}
