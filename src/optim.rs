//! Training steps that stay on the GPU: [`Sgd`], PyTorch's `torch.optim.SGD` over a module's
//! `weight` and `bias`, one small dispatch per parameter, no host round-trip.
//!
//! ```no_run
//! use wgpu_batchnorm::optim::{Sgd, SgdOptions};
//! use wgpu_batchnorm::{BatchNorm1d, Context, Tensor};
//! let ctx = Context::new()?;
//! let mut bn = BatchNorm1d::new(&ctx, 3)?;
//! let mut sgd = Sgd::new(&ctx, SgdOptions { lr: 0.1, momentum: 0.9, ..Default::default() })?;
//! let x = Tensor::from_slice(&ctx, &[0.5, 1.0, -1.0, 2.0, 0.0, 3.0], &[2, 3])?;
//! let y = bn.forward(&x)?;
//! let grads = bn.backward(&y)?; // d(0.5 * |y|^2) / dy = y
//! sgd.step(&mut bn, &grads)?; // weight -= lr * ..., bias -= lr * ..., on the GPU
//! # Ok::<(), wgpu_batchnorm::Error>(())
//! ```

use std::collections::HashMap;

use crate::batchnorm::BatchNorm;
use crate::device::Context;
use crate::error::{Error, Result};
use crate::module::Gradients;
use crate::ops::sgd_step::{SgdParams, SgdStepBindings};
use crate::tensor::{DType, Tensor};
use crate::workspace::Workspace;

/// `torch.optim.SGD`'s hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdOptions {
    /// Learning rate (>= 0).
    pub lr: f64,
    /// Momentum factor (>= 0); 0: no momentum buffers.
    pub momentum: f64,
    /// Dampening of the momentum (finite).
    pub dampening: f64,
    /// L2 penalty (>= 0).
    pub weight_decay: f64,
    /// Nesterov momentum (needs momentum > 0 and dampening 0).
    pub nesterov: bool,
}

impl Default for SgdOptions {
    fn default() -> Self {
        SgdOptions {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

/// SGD over the `weight` and `bias` of the modules it steps, with momentum buffers on the GPU
/// kept per module (as `torch.optim.SGD` keeps them per parameter): one `Sgd` may step several
/// modules, and each gets its own.
///
/// Safe to drop unsubmitted: whether a module's next step is its first (the step that starts
/// the momentum buffer without dampening) is recorded on the device by the step itself, so an
/// encoder with a step that is dropped instead of submitted leaves the state as it was.
#[derive(Debug)]
pub struct Sgd {
    ctx: Context,
    options: SgdOptions,
    ws: Workspace,
    /// Momentum buffers of each module's weight and bias (C values and a started flag),
    /// made on its first step, by module identity.
    bufs: HashMap<u64, [Tensor; 2]>,
    steps: u64,
}

impl Sgd {
    /// An optimizer with `options`, checked as PyTorch checks them (errors with
    /// `torch_kind() == Some("ValueError")` and `torch.optim.SGD`'s messages).
    pub fn new(ctx: &Context, options: SgdOptions) -> Result<Self> {
        let o = options;
        let bad = |m: String| Err(Error::InvalidValue(m));
        // NaN is invalid too.
        let nonnegative = |v: f64| v.is_finite() && v >= 0.0;
        if !nonnegative(o.lr) {
            return bad(format!("Invalid learning rate: {}", o.lr));
        }
        if !nonnegative(o.momentum) {
            return bad(format!("Invalid momentum value: {}", o.momentum));
        }
        if !nonnegative(o.weight_decay) {
            return bad(format!("Invalid weight_decay value: {}", o.weight_decay));
        }
        if !o.dampening.is_finite() {
            return bad(format!("Invalid dampening value: {}", o.dampening));
        }
        if o.nesterov && (o.momentum <= 0.0 || o.dampening != 0.0) {
            return bad("Nesterov momentum requires a momentum and zero dampening".into());
        }
        Ok(Sgd {
            ctx: ctx.clone(),
            options,
            ws: Workspace::new(ctx),
            bufs: HashMap::new(),
            steps: 0,
        })
    }

    /// Steps recorded (encode-only steps count when recorded, submitted or not; only what
    /// is submitted changes the parameters and momentum buffers).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Forgets `module`'s momentum buffers, so its next step starts them afresh (for a module
    /// that is dropped, or restarted).
    pub fn forget(&mut self, module: &BatchNorm) {
        self.bufs.remove(&module.id());
    }

    /// Records one step on `module`'s weight and bias with `grads` (from its backward) into
    /// `encoder`, and marks the module changed ([`BatchNorm::params_changed`]). No submit, no
    /// wait. Checked in full before anything is recorded: on an error nothing changed.
    ///
    /// Dropping `encoder` unsubmitted leaves the parameters, the momentum buffers and the
    /// first-step rule as they were (the next submitted step is still the first); what it
    /// does change on the host is the step count ([`Sgd::steps`]) and the module's mark, so a
    /// backward of a forward recorded before this call is refused, as after a real step.
    pub fn encode_step(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        module: &mut BatchNorm,
        grads: &Gradients,
    ) -> Result<()> {
        let t = module.tensors();
        let (Some(weight), Some(bias)) = (t.weight.cloned(), t.bias.cloned()) else {
            return Err(Error::NotAvailable(
                "SGD over weight and bias: the module has affine = false".into(),
            ));
        };
        let (Some(gw), Some(gb)) = (&grads.grad_weight, &grads.grad_bias) else {
            return Err(Error::InvalidArgument(
                "the gradients hold no grad_weight / grad_bias".into(),
            ));
        };
        let c = module.num_features();
        for (what, g) in [("grad_weight", gw), ("grad_bias", gb)] {
            g.check_context(&self.ctx, what)?;
            g.expect_shape(what, &[c])?;
            // Parameters and their gradients are f32, as in PyTorch's mixed precision.
            g.expect_dtype(what, DType::F32)?;
        }
        weight.check_context(&self.ctx, "the module's weight")?;
        if c == 0 {
            self.steps += 1;
            return Ok(());
        }
        let o = self.options;
        let id = module.id();
        if o.momentum != 0.0 && !self.bufs.contains_key(&id) {
            // Zeroed: the flag after the C values says no step has run yet.
            let bufs = [
                Tensor::zeros(&self.ctx, &[c + 1])?,
                Tensor::zeros(&self.ctx, &[c + 1])?,
            ];
            self.bufs.insert(id, bufs);
        }
        let params = self.ws.sgd_params(SgdParams {
            channels: c as u32,
            _unused: 0,
            nesterov: u32::from(o.nesterov),
            _pad: 0,
            lr: o.lr as f32,
            momentum: o.momentum as f32,
            dampening: o.dampening as f32,
            weight_decay: o.weight_decay as f32,
        });
        let bufs = self.bufs.get(&id);
        let op = |i: usize, p: &Tensor, g: &Tensor| SgdStepBindings {
            step: params.clone(),
            param: p.slot(),
            grad: g.slot(),
            buf: bufs.map(|b| b[i].slot()),
        };
        let ops = [op(0, &weight, gw), op(1, &bias, gb)];
        self.ws.record(encoder, "sgd step", |rec| {
            for op in &ops {
                op.encode(rec);
            }
        });
        self.steps += 1;
        module.params_changed();
        Ok(())
    }

    /// [`Sgd::encode_step`], submitted and blocked on. Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step(&mut self, module: &mut BatchNorm, grads: &Gradients) -> Result<()> {
        crate::device::block_on(self.step_async(module, grads))
    }

    /// [`Sgd::encode_step`], submitted and waited for without blocking the thread.
    pub async fn step_async(&mut self, module: &mut BatchNorm, grads: &Gradients) -> Result<()> {
        let ctx = self.ctx.clone();
        ctx.run_async(|encoder| self.encode_step(encoder, module, grads))
            .await
    }
}
