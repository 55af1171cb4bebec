//! Backward: gradients of batch norm with respect to its input, weight and bias.
//!
//! [`BatchNorm::backward`](crate::BatchNorm::backward) differentiates the module's last
//! forward. [`BatchNormBackward`] is the functional form for users who bring their own
//! autograd: it takes `x`, `grad_output` and the saved statistics explicitly.

use crate::batchnorm::tensor_params_key;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{self, Kernel};
use crate::tensor::Tensor;
use crate::workspace::Workspace;

/// Gradients returned by [`BatchNorm::backward`](crate::BatchNorm::backward).
#[derive(Clone, Debug)]
pub struct Gradients {
    /// dL/dx, the shape of the forward input.
    pub grad_input: Tensor,
    /// dL/dweight, shape `[C]` (None when affine = false).
    pub grad_weight: Option<Tensor>,
    /// dL/dbias, shape `[C]` (None when affine = false).
    pub grad_bias: Option<Tensor>,
}

/// The statistics the forward normalized with.
#[derive(Clone, Copy, Debug)]
pub enum SavedStats<'a> {
    /// Batch statistics (training, or eval without running stats): the forward's `save_mean`
    /// and `save_invstd`, shape `[C]`. The gradient flows through the statistics.
    Batch {
        /// Per-channel batch mean.
        save_mean: &'a Tensor,
        /// Per-channel `1 / sqrt(biased var + eps)`.
        save_invstd: &'a Tensor,
    },
    /// Running statistics (eval with tracked buffers), shape `[C]`; they are constants.
    Running {
        /// `running_mean`.
        running_mean: &'a Tensor,
        /// `running_var`.
        running_var: &'a Tensor,
        /// `eps` (>= 0).
        eps: f64,
    },
}

/// Everything one backward needs: inputs, saved statistics and output tensors.
#[derive(Clone, Copy, Debug)]
pub struct BackwardArgs<'a> {
    /// The forward's input, (N, C, *spatial).
    pub x: &'a Tensor,
    /// dL/dy, same shape as `x`.
    pub grad_output: &'a Tensor,
    /// The forward's weight, shape `[C]`; None means 1 (affine = false).
    pub weight: Option<&'a Tensor>,
    /// The statistics the forward normalized with.
    pub stats: SavedStats<'a>,
    /// Output: dL/dx, same shape as `x`, overlapping neither `x` nor `grad_output`.
    pub grad_input: &'a Tensor,
    /// Output: dL/dweight, shape `[C]`, if wanted.
    pub grad_weight: Option<&'a Tensor>,
    /// Output: dL/dbias, shape `[C]`, if wanted.
    pub grad_bias: Option<&'a Tensor>,
}

/// The functional backward, with its own scratch space and caches (create once, reuse).
///
/// ```no_run
/// use wgpu_batchnorm::{BackwardArgs, BatchNorm2d, BatchNormBackward, Context, SavedStats, Tensor};
/// let ctx = Context::new()?;
/// let mut bn = BatchNorm2d::new(&ctx, 3)?;
/// let x = Tensor::from_slice(&ctx, &vec![0.5; 2 * 3 * 4], &[2, 3, 2, 2])?;
/// let dy = Tensor::from_slice(&ctx, &vec![1.0; 2 * 3 * 4], &[2, 3, 2, 2])?;
/// bn.forward(&x)?;
/// let t = bn.tensors();
/// let dx = Tensor::empty(&ctx, &[2, 3, 2, 2])?;
/// let mut backward = BatchNormBackward::new(&ctx);
/// let mut encoder = ctx.device().create_command_encoder(&Default::default());
/// backward.encode(&mut encoder, &BackwardArgs {
///     x: &x,
///     grad_output: &dy,
///     weight: Some(t.weight),
///     stats: SavedStats::Batch { save_mean: t.save_mean, save_invstd: t.save_invstd },
///     grad_input: &dx,
///     grad_weight: None,
///     grad_bias: None,
/// })?;
/// ctx.queue().submit(Some(encoder.finish()));
/// # Ok::<(), wgpu_batchnorm::Error>(())
/// ```
pub struct BatchNormBackward {
    ctx: Context,
    workspace: Workspace,
}

impl BatchNormBackward {
    /// A backward runner for `ctx`.
    pub fn new(ctx: &Context) -> Self {
        BatchNormBackward {
            ctx: ctx.clone(),
            workspace: Workspace::new(ctx),
        }
    }

    /// Records the backward into `encoder` (no submit, no wait).
    pub fn encode(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        args: &BackwardArgs<'_>,
    ) -> Result<()> {
        encode(&self.ctx, &mut self.workspace, encoder, args)
    }

    /// Runs the backward and waits for it.
    pub fn run(&mut self, args: &BackwardArgs<'_>) -> Result<()> {
        let ctx = self.ctx.clone();
        ctx.scoped(|| {
            let mut encoder =
                ctx.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("batchnorm backward"),
                    });
            self.encode(&mut encoder, args)?;
            ctx.submit_and_wait(encoder.finish())
        })
    }
}

fn check_channel_tensor(what: &str, t: &Tensor, c: usize) -> Result<()> {
    t.expect_shape(what, &[c])
}

fn check_args(args: &BackwardArgs<'_>) -> Result<usize> {
    let shape = args.x.shape();
    if shape.len() < 2 {
        return Err(Error::ShapeMismatch {
            what: "backward input x (needs at least (N, C))".into(),
            expected: vec![0, 0],
            got: shape.to_vec(),
        });
    }
    let c = shape[1];
    args.grad_output.expect_shape("grad_output", shape)?;
    args.grad_input.expect_shape("grad_input", shape)?;
    if let Some(w) = args.weight {
        check_channel_tensor("weight", w, c)?;
    }
    if let Some(g) = args.grad_weight {
        check_channel_tensor("grad_weight", g, c)?;
    }
    if let Some(g) = args.grad_bias {
        check_channel_tensor("grad_bias", g, c)?;
    }
    match args.stats {
        SavedStats::Batch {
            save_mean,
            save_invstd,
        } => {
            check_channel_tensor("save_mean", save_mean, c)?;
            check_channel_tensor("save_invstd", save_invstd, c)?;
        }
        SavedStats::Running {
            running_mean,
            running_var,
            eps,
        } => {
            check_channel_tensor("running_mean", running_mean, c)?;
            check_channel_tensor("running_var", running_var, c)?;
            // NaN fails too.
            if eps.is_nan() || eps < 0.0 {
                return Err(Error::InvalidEps {
                    eps,
                    batch_stats: false,
                });
            }
        }
    }
    if args.x.numel() > 0
        && (args.grad_input.overlaps(args.x) || args.grad_input.overlaps(args.grad_output))
    {
        return Err(Error::Aliasing);
    }
    if let (Some(gw), Some(gb)) = (args.grad_weight, args.grad_bias) {
        if c > 0 && gw.overlaps(gb) {
            return Err(Error::Aliasing);
        }
    }
    Ok(c)
}

/// Records a backward into `encoder`, using `ws` for scratch space and caches.
pub(crate) fn encode(
    ctx: &Context,
    ws: &mut Workspace,
    encoder: &mut wgpu::CommandEncoder,
    args: &BackwardArgs<'_>,
) -> Result<()> {
    let c = check_args(args)?;
    let (use_running, eps, mean, spread) = match args.stats {
        SavedStats::Batch {
            save_mean,
            save_invstd,
        } => (false, 0.0, save_mean, save_invstd),
        SavedStats::Running {
            running_mean,
            running_var,
            eps,
        } => (true, eps, running_mean, running_var),
    };
    if args.x.numel() == 0 {
        // No values: the parameter gradients are sums over nothing.
        for g in [args.grad_weight, args.grad_bias].into_iter().flatten() {
            if c > 0 {
                encoder.clear_buffer(g.buffer(), g.offset(), Some(g.size_bytes()));
            }
        }
        return Ok(());
    }
    let key = tensor_params_key(args.x, &[args.grad_output, args.grad_input], eps, Some(0.0))?;
    ctx.scoped(|| {
        let prepared = ws.prepare(key);
        let Some(plan) = prepared.plan.as_ref() else {
            return Ok(());
        };
        let blocks = || plan.blocks.iter().zip(&prepared.blocks);
        let channel_bytes = c as u64 * 4;
        let coef = ws.scratch("coef", channel_bytes * 2);
        let param_grads_needed =
            !use_running || args.grad_weight.is_some() || args.grad_bias.is_some();
        let sums = param_grads_needed.then(|| {
            let partials = ws.partials(plan.partials());
            let grad_weight = args
                .grad_weight
                .map(Tensor::slot)
                .unwrap_or_else(|| ws.scratch("unused grad_weight", channel_bytes));
            let grad_bias = args
                .grad_bias
                .map(Tensor::slot)
                .unwrap_or_else(|| ws.scratch("unused grad_bias", channel_bytes));
            let reduce: Vec<wgpu::BindGroup> = blocks()
                .map(|(block, params)| {
                    ws.bind(
                        Kernel::BackwardReduce,
                        &[
                            params.clone(),
                            args.x.window(plan, block),
                            args.grad_output.window(plan, block),
                            mean.slot(),
                            partials.clone(),
                        ],
                    )
                })
                .collect();
            let finalize = ws.bind(
                Kernel::BackwardFinalize,
                &[
                    prepared.channel.clone(),
                    partials,
                    spread.slot(),
                    grad_weight,
                    grad_bias,
                    coef.clone(),
                ],
            );
            (reduce, finalize)
        });
        let input: Vec<wgpu::BindGroup> = blocks()
            .map(|(block, params)| {
                ws.bind(
                    Kernel::BackwardInput,
                    &[
                        params.clone(),
                        args.x.window(plan, block),
                        args.grad_output.window(plan, block),
                        args.grad_input.window(plan, block),
                        mean.slot(),
                        spread.slot(),
                        // Never read without a weight (HAS_WEIGHT = false), but a slot needs a
                        // buffer.
                        args.weight.unwrap_or(mean).slot(),
                        coef.clone(),
                    ],
                )
            })
            .collect();
        let device = ctx.device();
        let k = ctx.kernels();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("batchnorm backward"),
            timestamp_writes: None,
        });
        if let Some((reduce, finalize)) = &sums {
            kernels::backward::encode_sums(
                k,
                device,
                &mut pass,
                plan,
                reduce,
                finalize,
                use_running,
            );
        }
        kernels::backward::encode_input(
            k,
            device,
            &mut pass,
            plan,
            &input,
            use_running,
            args.weight.is_some(),
        );
        Ok(())
    })
}
