//! The op layer: one module per kernel, each beside its shader in `shaders/`, and the
//! machinery they share.
//!
//! | kernel | host module | shader |
//! |---|---|---|
//! | statistics (Welford partials) | [`stats`] | `stats.wgsl` |
//! | statistics merge per channel | [`finalize_stats`] | `finalize_stats.wgsl` |
//! | normalize (fused scale and shift) | [`normalize`] | `normalize.wgsl` |
//! | running-statistics update | [`update_running`] | `update_running.wgsl` |
//! | backward sums | [`backward_reduce`] | `backward_reduce.wgsl` |
//! | backward per channel | [`backward_finalize`] | `backward_finalize.wgsl` |
//! | grad_input | [`backward_input`] | `backward_input.wgsl` |
//! | per-channel coefficients (backward epilogue, eval fold) | [`channel_affine`] | `channel_affine.wgsl` |
//! | f16 <-> f32 copies of f16 activations | [`convert`] | `convert.wgsl` + `convert_packed.wgsl` / `convert_native.wgsl` |
//! | an SGD step on a per-channel parameter | [`sgd_step`] | `sgd_step.wgsl` |
//!
//! Each module declares its bindings once, with [`bindings!`]: a struct with one named field
//! per binding. That declaration is the only place a binding's number lives: it gives the
//! bind-group layout, the bind group, and the `@group(0) @binding(i) var ...` lines prepended
//! to the shader (the `.wgsl` files use the names and declare no bindings). Optional bindings
//! are `Option`s; an absent one is specialised away by a generated `HAS_<NAME>` override
//! constant and bound to a small unused buffer.
//!
//! The machinery, a file per concern:
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the kernel registry ([`Kernel`], written once by `kernels!`) |
//! | [`bindings`] | the `bindings!` macro, binding roles, windows of a plan |
//! | [`variant`] | what a compiled pipeline is specialised on ([`Variant`], packed into its cache key) |
//! | [`assembly`] | a kernel's static description ([`KernelSpec`]) and its WGSL assembled from `shaders/pieces/` |
//! | [`pipelines`] | layouts and pipelines, built once per device and kept in the device's store |
//! | [`recorder`] | bind groups cached per exact buffer ranges, and the dispatches an op records |
//!
//! A compiled pipeline is one [`Variant`]: kernel x walk x item width x reduction path x dtype
//! x epilogue x statistics x which optional bindings are present, each only where the kernel
//! uses it. Shaders are assembled from pieces (see [`Assembly`]): `common.wgsl`; for tensor
//! kernels an item piece and `walk.wgsl`; for kernels that reduce a reduction piece (and, for
//! tensor kernels, `walk_reduce.wgsl`).

pub(crate) mod assembly;
pub(crate) mod backward_finalize;
pub(crate) mod backward_input;
pub(crate) mod backward_reduce;
pub(crate) mod backward_single;
pub(crate) mod bindings;
pub(crate) mod channel_affine;
pub(crate) mod convert;
pub(crate) mod finalize_stats;
pub(crate) mod forward_single;
pub(crate) mod normalize;
pub(crate) mod pipelines;
pub(crate) mod plan;
pub(crate) mod recorder;
pub(crate) mod sgd_step;
pub(crate) mod stats;
#[cfg(any(test, feature = "bench"))]
pub(crate) mod stream;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod update_running;
pub(crate) mod variant;

pub use crate::activation::Activation;
pub use crate::profile::Walk;
pub(crate) use crate::profile::{KernelLimits, Target};
pub(crate) use crate::tensor::Binding;
pub(crate) use assembly::{Assembly, KernelSpec};
pub(crate) use bindings::{
    binding_family, bindings, Access, BindingSpec, ChannelParams, KernelBindings, Optional,
    OptionalWindow, PreparedPlan, Role, RoleKind, Whole, Window, MAX_BINDINGS,
};
pub(crate) use pipelines::Pipelines;
pub(crate) use plan::Plan;
pub(crate) use recorder::{BindCache, DispatchTally, Recorder};
pub(crate) use variant::{ChannelTensor, Epilogue, ItemWidth, Specialize, Statistics};

/// Declares the kernels once: the enum, the list of all of them (layouts are indexed by it)
/// and each one's spec, from one line per kernel.
macro_rules! kernels {
    ($(
        $(#[doc = $doc:literal])*
        $(#[cfg($cfg:meta)])?
        $kernel:ident => $spec:path,
    )*) => {
        /// The kernels.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        pub(crate) enum Kernel {
            $( $(#[doc = $doc])* $(#[cfg($cfg)])? $kernel, )*
        }

        impl Kernel {
            /// Every kernel, in declaration order.
            pub(crate) const ALL: &'static [Kernel] = &[$( $(#[cfg($cfg)])? Kernel::$kernel, )*];

            /// Its static description.
            pub(crate) fn spec(self) -> &'static KernelSpec {
                match self {
                    $( $(#[cfg($cfg)])? Kernel::$kernel => &$spec, )*
                }
            }

            /// Its position in [`Kernel::ALL`].
            pub(crate) fn index(self) -> usize {
                self as usize
            }
        }
    };
}

kernels! {
    Stats => stats::SPEC,
    FinalizeStats => finalize_stats::SPEC,
    Normalize => normalize::SPEC,
    UpdateRunning => update_running::SPEC,
    BackwardReduce => backward_reduce::SPEC,
    BackwardFinalize => backward_finalize::SPEC,
    BackwardInput => backward_input::SPEC,
    ChannelAffine => channel_affine::SPEC,
    Convert => convert::SPEC,
    ConvertNative => convert::NATIVE_SPEC,
    SgdStep => sgd_step::SPEC,
    ForwardSingle => forward_single::SPEC,
    /// The single-dispatch training forward with the running update (10 storage buffers:
    /// built only on devices that allow them).
    ForwardSingleUpdate => forward_single::UPDATE_SPEC,
    BackwardSingle => backward_single::SPEC,
    /// The single-dispatch backward through the epilogue (11 storage buffers: built only on
    /// devices that allow them).
    BackwardSingleEpilogue => backward_single::EPILOGUE_SPEC,
    /// The benchmark's second floor, compiled only where it is used.
    #[cfg(any(test, feature = "bench"))]
    Stream => stream::SPEC,
}
