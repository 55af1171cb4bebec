//! Output metadata for the fusion stream: what each operation will return, known before it
//! runs (Burn's fusion registers the outputs now and runs the kernels later). These must
//! agree with `cube.rs`, which allocates exactly these outputs.

use crate::ops::{
    BackwardOutputMetadata, BackwardSpec, ForwardOutputMetadata, ForwardSpec, MaybeMetadata,
    OperandsMetadata, StatsMetadata,
};
use burn::backend::fusion::custom::TensorSpec;
use burn::tensor::DType;

fn channels(input: &TensorSpec) -> TensorSpec {
    TensorSpec::new([input.shape[1]].into(), DType::F32)
}

/// `bn_forward`'s outputs.
pub fn forward(
    input: &TensorSpec,
    operands: &OperandsMetadata,
    spec: &ForwardSpec,
) -> ForwardOutputMetadata {
    let c = || channels(input);
    let running_given = !matches!(operands.stats, StatsMetadata::None);
    let saved = if spec.training || !running_given {
        StatsMetadata::Batch {
            mean: c(),
            invstd: c(),
        }
    } else {
        StatsMetadata::None
    };
    let running = match (&operands.stats, spec.training) {
        (StatsMetadata::Running { .. }, true) => StatsMetadata::Running {
            mean: c(),
            var: c(),
        },
        (StatsMetadata::Counted { count, .. }, true) => StatsMetadata::Counted {
            mean: c(),
            var: c(),
            count: count.clone(),
        },
        _ => StatsMetadata::None,
    };
    ForwardOutputMetadata {
        output: input.clone(),
        saved,
        running,
    }
}

/// `bn_backward`'s outputs.
pub fn backward(
    input: &TensorSpec,
    _grad_output: &TensorSpec,
    _operands: &OperandsMetadata,
    spec: &BackwardSpec,
) -> BackwardOutputMetadata {
    let maybe = |yes: bool, spec: TensorSpec| {
        if yes {
            MaybeMetadata::Some(spec)
        } else {
            MaybeMetadata::None
        }
    };
    BackwardOutputMetadata {
        grad_input: maybe(spec.grad_input, input.clone()),
        grad_weight: maybe(spec.grad_params, channels(input)),
        grad_bias: maybe(spec.grad_params, channels(input)),
        grad_residual: maybe(spec.grad_residual, input.clone()),
    }
}
