//! The operations under Burn's autodiff: the forward records one backward step whose state is
//! what the backward kernels read (the input, the parameters, the residual and the saved
//! statistics), and that step runs [`BatchNormOps::bn_backward`] on the inner backend. The
//! gradients are this crate's kernels' results, not re-derived by Burn.

use burn::backend::AutodiffBackend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::NodeGuard;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;

use crate::ops::{
    BackwardOutput, BackwardSpec, BatchNormOps, ForwardOutput, ForwardSpec, Maybe, Operands, Stats,
};

/// Which input a parent of the backward step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Input,
    Weight,
    Bias,
    Residual,
}

/// The inner backend's tensors the backward reads.
struct State<B: BatchNormOps> {
    input: FloatTensor<B>,
    weight: Option<FloatTensor<B>>,
    bias: Option<FloatTensor<B>>,
    residual: Option<FloatTensor<B>>,
    stats: Stats<B>,
    spec: BackwardSpec,
}

impl<B: BatchNormOps> Clone for State<B> {
    fn clone(&self) -> Self {
        State {
            input: self.input.clone(),
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            residual: self.residual.clone(),
            stats: clone_stats(&self.stats),
            spec: self.spec,
        }
    }
}

impl<B: BatchNormOps> std::fmt::Debug for State<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("spec", &self.spec).finish()
    }
}

#[derive(Debug)]
struct BatchNormBackward<const N: usize> {
    roles: [Role; N],
}

fn maybe<B: BatchNormOps>(t: &Option<FloatTensor<B>>) -> Maybe<B> {
    match t {
        Some(t) => Maybe::Some(t.clone()),
        None => Maybe::None,
    }
}

fn clone_stats<B: BatchNormOps>(s: &Stats<B>) -> Stats<B> {
    match s {
        Stats::None => Stats::None,
        Stats::Running { mean, var } => Stats::Running {
            mean: mean.clone(),
            var: var.clone(),
        },
        Stats::Counted { mean, var, count } => Stats::Counted {
            mean: mean.clone(),
            var: var.clone(),
            count: count.clone(),
        },
        Stats::Batch { mean, invstd } => Stats::Batch {
            mean: mean.clone(),
            invstd: invstd.clone(),
        },
    }
}

impl<B: BatchNormOps, const N: usize> Backward<B, N> for BatchNormBackward<N> {
    type State = State<B>;

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let tracked = |role: Role| {
            self.roles
                .iter()
                .zip(ops.parents.iter())
                .find(|(r, _)| **r == role)
                .and_then(|(_, p)| p.as_ref().map(|node| node.id))
        };
        let (node_x, node_w, node_b, node_r) = (
            tracked(Role::Input),
            tracked(Role::Weight),
            tracked(Role::Bias),
            tracked(Role::Residual),
        );
        let state = ops.state;
        let spec = BackwardSpec {
            grad_input: node_x.is_some(),
            grad_params: node_w.is_some() || node_b.is_some(),
            grad_residual: node_r.is_some(),
            ..state.spec
        };
        let out: BackwardOutput<B> = B::bn_backward(
            state.input,
            grad,
            Operands {
                weight: maybe(&state.weight),
                bias: maybe(&state.bias),
                residual: maybe(&state.residual),
                stats: state.stats,
            },
            spec,
        );
        let mut register = |node: Option<NodeId>, t: Maybe<B>| {
            if let (Some(node), Maybe::Some(t)) = (node, t) {
                grads.register::<B>(node, t);
            }
        };
        register(node_x, out.grad_input);
        register(node_w, out.grad_weight);
        register(node_b, out.grad_bias);
        register(node_r, out.grad_residual);
    }
}

fn constant<B: BatchNormOps, C: CheckpointStrategy>(s: Stats<B>) -> Stats<Autodiff<B, C>> {
    match s {
        Stats::None => Stats::None,
        Stats::Running { mean, var } => Stats::Running {
            mean: <Autodiff<B, C> as AutodiffBackend>::from_inner(mean),
            var: <Autodiff<B, C> as AutodiffBackend>::from_inner(var),
        },
        Stats::Counted { mean, var, count } => Stats::Counted {
            mean: <Autodiff<B, C> as AutodiffBackend>::from_inner(mean),
            var: <Autodiff<B, C> as AutodiffBackend>::from_inner(var),
            count,
        },
        Stats::Batch { mean, invstd } => Stats::Batch {
            mean: <Autodiff<B, C> as AutodiffBackend>::from_inner(mean),
            invstd: <Autodiff<B, C> as AutodiffBackend>::from_inner(invstd),
        },
    }
}

/// Statistics are never differentiated: running buffers and saved statistics are constants.
fn inner_stats<B: BatchNormOps, C: CheckpointStrategy>(s: Stats<Autodiff<B, C>>) -> Stats<B> {
    match s {
        Stats::None => Stats::None,
        Stats::Running { mean, var } => Stats::Running {
            mean: mean.into_primitive(),
            var: var.into_primitive(),
        },
        Stats::Counted { mean, var, count } => Stats::Counted {
            mean: mean.into_primitive(),
            var: var.into_primitive(),
            count,
        },
        Stats::Batch { mean, invstd } => Stats::Batch {
            mean: mean.into_primitive(),
            invstd: invstd.into_primitive(),
        },
    }
}

struct Prepared<B: BatchNormOps> {
    nodes: Vec<(Role, NodeGuard)>,
    input: FloatTensor<B>,
    weight: Option<FloatTensor<B>>,
    bias: Option<FloatTensor<B>>,
    residual: Option<FloatTensor<B>>,
    stats: Stats<B>,
}

fn split<B: BatchNormOps, C: CheckpointStrategy>(
    input: FloatTensor<Autodiff<B, C>>,
    operands: Operands<Autodiff<B, C>>,
) -> Prepared<B> {
    let mut nodes = Vec::with_capacity(4);
    let (input, guard) = input.into_parts();
    nodes.push((Role::Input, guard));
    let mut take = |role: Role, t: Maybe<Autodiff<B, C>>| match t {
        Maybe::Some(t) => {
            let (t, guard) = t.into_parts();
            nodes.push((role, guard));
            Some(t)
        }
        Maybe::None => None,
    };
    let weight = take(Role::Weight, operands.weight);
    let bias = take(Role::Bias, operands.bias);
    let residual = take(Role::Residual, operands.residual);
    Prepared {
        nodes,
        input,
        weight,
        bias,
        residual,
        stats: inner_stats(operands.stats),
    }
}

fn record<B: BatchNormOps, C: CheckpointStrategy, const N: usize>(
    p: Prepared<B>,
    spec: ForwardSpec,
) -> ForwardOutput<Autodiff<B, C>> {
    let roles: [Role; N] = std::array::from_fn(|i| p.nodes[i].0);
    let guards: [NodeGuard; N] = match p
        .nodes
        .into_iter()
        .map(|(_, g)| g)
        .collect::<Vec<_>>()
        .try_into()
    {
        Ok(guards) => guards,
        Err(_) => unreachable!("N is the number of parents"),
    };
    let run = |input: FloatTensor<B>| {
        B::bn_forward(
            input,
            Operands {
                weight: maybe(&p.weight),
                bias: maybe(&p.bias),
                residual: maybe(&p.residual),
                stats: clone_stats(&p.stats),
            },
            spec,
        )
    };
    let step = BatchNormBackward { roles };
    match step.prepare::<C>(guards).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let out = run(p.input.clone());
            // The backward differentiates through what this forward normalized with: the
            // batch statistics it saved, or (eval) the running buffers it read.
            let stats = match &out.saved {
                Stats::Batch { .. } => clone_stats(&out.saved),
                _ => clone_stats(&p.stats),
            };
            let state = State {
                input: p.input,
                weight: p.weight,
                bias: p.bias,
                residual: p.residual,
                stats,
                spec: BackwardSpec {
                    eps: spec.eps,
                    activation: spec.activation,
                    grad_input: true,
                    grad_params: true,
                    grad_residual: true,
                },
            };
            ForwardOutput {
                output: prep.finish(state, out.output),
                saved: constant(out.saved),
                running: constant(out.running),
            }
        }
        OpsKind::UnTracked(prep) => {
            let out = run(p.input);
            ForwardOutput {
                output: prep.finish(out.output),
                saved: constant(out.saved),
                running: constant(out.running),
            }
        }
    }
}

impl<B: BatchNormOps, C: CheckpointStrategy> BatchNormOps for Autodiff<B, C> {
    fn bn_forward(
        input: FloatTensor<Self>,
        operands: Operands<Self>,
        spec: ForwardSpec,
    ) -> ForwardOutput<Self> {
        let prepared = split::<B, C>(input, operands);
        match prepared.nodes.len() {
            1 => record::<B, C, 1>(prepared, spec),
            2 => record::<B, C, 2>(prepared, spec),
            3 => record::<B, C, 3>(prepared, spec),
            _ => record::<B, C, 4>(prepared, spec),
        }
    }

    fn bn_backward(
        _input: FloatTensor<Self>,
        _grad_output: FloatTensor<Self>,
        _operands: Operands<Self>,
        _spec: BackwardSpec,
    ) -> BackwardOutput<Self> {
        // As Burn's own batch_norm_train_backward: a second derivative is not offered.
        panic!("wgpu-batchnorm-burn: the batch norm backward cannot itself be differentiated")
    }
}
