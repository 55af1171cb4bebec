//! A kernel's bindings, declared once: the `bindings!` macro (one struct field per binding,
//! which gives the layout, the bind group and the shader's declarations), the roles a field
//! can have, and the windows a plan binds of a tensor.

use super::plan::{self, Plan};
use super::Kernel;
use crate::tensor::Binding;

/// The most bindings any kernel has.
pub(crate) const MAX_BINDINGS: usize = 12;

/// How a kernel uses one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Uniform,
    Read,
    ReadWrite,
}

/// What a binding field holds and how it is bound per dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RoleKind {
    /// The per-block uniform of a tensor pass, supplied by the plan.
    Blocks,
    /// A buffer range bound as it is.
    Whole,
    /// A buffer range that may be absent.
    Optional,
    /// A tensor bound through each block's window.
    Window,
    /// A tensor bound through each block's window, or absent.
    OptionalWindow,
}

impl RoleKind {
    /// Whether the binding may be absent (and so has a `HAS_<NAME>` override).
    pub fn optional(self) -> bool {
        matches!(self, RoleKind::Optional | RoleKind::OptionalWindow)
    }
}

/// A binding's role: the type of its field in a bindings struct and how it is bound.
pub(crate) trait Role {
    type Field;
    const KIND: RoleKind;
    fn resolve(field: &Self::Field, at: Option<(&PreparedPlan, usize)>) -> Option<Binding>;
}

/// Bound as it is.
pub(crate) struct Whole;
/// Bound as it is, or absent.
pub(crate) struct Optional;
/// A tensor bound through the window of each block.
pub(crate) struct Window;
/// A tensor bound through the window of each block, or absent.
pub(crate) struct OptionalWindow;

impl Role for Whole {
    type Field = Binding;
    const KIND: RoleKind = RoleKind::Whole;
    fn resolve(field: &Binding, _: Option<(&PreparedPlan, usize)>) -> Option<Binding> {
        Some(field.clone())
    }
}

impl Role for Optional {
    type Field = Option<Binding>;
    const KIND: RoleKind = RoleKind::Optional;
    fn resolve(field: &Option<Binding>, _: Option<(&PreparedPlan, usize)>) -> Option<Binding> {
        field.clone()
    }
}

impl Role for Window {
    type Field = Binding;
    const KIND: RoleKind = RoleKind::Window;
    fn resolve(field: &Binding, at: Option<(&PreparedPlan, usize)>) -> Option<Binding> {
        Some(match at {
            Some((p, i)) => field.window(&p.plan, &p.plan.blocks[i]),
            None => field.clone(),
        })
    }
}

impl Role for OptionalWindow {
    type Field = Option<Binding>;
    const KIND: RoleKind = RoleKind::OptionalWindow;
    fn resolve(field: &Option<Binding>, at: Option<(&PreparedPlan, usize)>) -> Option<Binding> {
        field.as_ref().and_then(|f| Window::resolve(f, at))
    }
}

/// One binding of a kernel, as declared by [`bindings!`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct BindingSpec {
    pub name: &'static str,
    pub access: Access,
    /// The WGSL type of the variable.
    pub wgsl: &'static str,
    pub role: RoleKind,
}

/// A kernel's bindings struct, tied to its kernel by [`bindings!`]: what the recorder needs to
/// dispatch it, so that an op names its kernel once, where it declares its bindings.
pub(crate) trait KernelBindings {
    /// The kernel these bindings are for.
    const KERNEL: Kernel;

    /// The ranges bound for block `at` (None: the per-channel passes), in binding order; None
    /// where an optional binding is absent.
    fn resolve(&self, at: Option<(&PreparedPlan, usize)>) -> [Option<Binding>; MAX_BINDINGS];
}

/// Declares a kernel's bindings struct, `NAME for KERNEL`: one field per binding, in binding
/// order (the first, `per_block NAME`, is the tensor passes' per-block uniform, which the plan
/// supplies). Each field is `name: Access Role "WGSL type"`. Generates `SPEC` (the order, for
/// the layout and the shader's declarations) and its [`KernelBindings`] (the kernel, and the
/// bound ranges of one dispatch in that order).
macro_rules! bindings {
    (
        $(#[$meta:meta])*
        $name:ident for $kernel:ident $(, per_block $geo:ident)? {
            $( $(#[$fmeta:meta])* $field:ident : $access:ident $role:ident $wgsl:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug)]
        pub(crate) struct $name {
            $( $(#[$fmeta])* pub $field: <$crate::ops::$role as $crate::ops::Role>::Field, )*
        }

        impl $name {
            /// The bindings in binding order.
            pub(crate) const SPEC: &'static [$crate::ops::BindingSpec] = &[
                $( $crate::ops::BindingSpec {
                    name: stringify!($geo),
                    access: $crate::ops::Access::Uniform,
                    wgsl: "Block",
                    role: $crate::ops::RoleKind::Blocks,
                }, )?
                $( $crate::ops::BindingSpec {
                    name: stringify!($field),
                    access: $crate::ops::Access::$access,
                    wgsl: $wgsl,
                    role: <$crate::ops::$role as $crate::ops::Role>::KIND,
                }, )*
            ];
        }

        impl $crate::ops::KernelBindings for $name {
            const KERNEL: $crate::ops::Kernel = $crate::ops::Kernel::$kernel;

            #[allow(unused_mut, unused_assignments)]
            fn resolve(
                &self,
                at: Option<(&$crate::ops::PreparedPlan, usize)>,
            ) -> [Option<$crate::ops::Binding>; $crate::ops::MAX_BINDINGS] {
                let mut out: [Option<$crate::ops::Binding>; $crate::ops::MAX_BINDINGS] =
                    Default::default();
                let mut i = 0;
                $(
                    let _ = stringify!($geo);
                    out[i] = at.map(|(p, b)| p.params[b].clone());
                    i += 1;
                )?
                $(
                    out[i] = <$crate::ops::$role as $crate::ops::Role>::resolve(&self.$field, at);
                    i += 1;
                )*
                out
            }
        }
    };
}
pub(crate) use bindings;

/// Declares kernels whose bindings begin with the same fields, the shared ones written once:
/// `shared NAME { fields }` gives a plain struct of those fields, then each `STRUCT for KERNEL
/// { fields }` a bindings struct (as [`bindings!`]) of the shared fields followed by its own,
/// with `STRUCT::new(shared, own fields..)`.
macro_rules! binding_family {
    (
        $(#[$smeta:meta])*
        shared $shared:ident {
            $( $(#[$sfm:meta])* $sf:ident : $sa:ident $sr:ident $sw:literal ),* $(,)?
        }
        $($kernels:tt)*
    ) => {
        $(#[$smeta])*
        #[derive(Clone, Debug)]
        pub(crate) struct $shared {
            $( $(#[$sfm])* pub $sf: <$crate::ops::$sr as $crate::ops::Role>::Field, )*
        }
        $crate::ops::binding_family!(
            @kernels [$( $(#[$sfm])* $sf : $sa $sr $sw, )*] $shared $($kernels)*
        );
    };
    (@kernels [$($shared_fields:tt)*] $shared:ident) => {};
    (
        @kernels [$($shared_fields:tt)*] $shared:ident
        $(#[$meta:meta])*
        $name:ident for $kernel:ident {
            $( $(#[$fm:meta])* $f:ident : $a:ident $r:ident $w:literal ),* $(,)?
        }
        $($rest:tt)*
    ) => {
        $crate::ops::bindings! {
            $(#[$meta])*
            $name for $kernel { $($shared_fields)* $( $(#[$fm])* $f : $a $r $w, )* }
        }
        $crate::ops::binding_family!(@new [$($shared_fields)*] $shared $name [$($f : $r),*]);
        $crate::ops::binding_family!(@kernels [$($shared_fields)*] $shared $($rest)*);
    };
    (
        @new [$( $(#[$sfm:meta])* $sf:ident : $sa:ident $sr:ident $sw:literal, )*]
        $shared:ident $name:ident [$($f:ident : $r:ident),*]
    ) => {
        impl $name {
            /// The shared bindings, then this kernel's own.
            pub(crate) fn new(
                shared: $shared
                $(, $f: <$crate::ops::$r as $crate::ops::Role>::Field)*
            ) -> Self {
                $name { $( $sf: shared.$sf, )* $( $f, )* }
            }
        }
    };
}
pub(crate) use binding_family;

impl Binding {
    /// The part of this tensor binding that `block` of `plan` binds.
    pub fn window(&self, plan: &Plan, block: &plan::Block) -> Binding {
        let item = plan.item_bytes;
        Binding {
            buffer: self.buffer.clone(),
            offset: self.offset + u64::from(block.params.bind_base) * item,
            // Whole words (an odd number of f16 values reads one more, inside the tensor's
            // word-padded allocation or the next window; it is never written).
            size: (block.bind_items * item).next_multiple_of(4),
        }
    }
}

/// A plan with one immutable params buffer per block, so that several calls recorded into one
/// encoder cannot see each other's parameters.
#[derive(Debug)]
pub(crate) struct PreparedPlan {
    pub plan: Plan,
    pub params: Vec<Binding>,
}

/// Per-channel totals and eps: `Channels` in `shaders/pieces/common.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ChannelParams {
    pub channels: u32,
    pub total_tasks: u32,
    pub count: u32,
    pub eps: f32,
}
