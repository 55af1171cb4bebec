//! A kernel's static description ([`KernelSpec`]) and its WGSL source, assembled from the
//! pieces in `shaders/pieces/` and the declarations its bindings struct gives.

use super::bindings::{Access, BindingSpec};
use super::variant::{ItemWidth, Reduction, Variant};
use crate::tensor::DType;

const COMMON: &str = include_str!("../../shaders/pieces/common.wgsl");
const ITEM_VEC4: &str = include_str!("../../shaders/pieces/item_vec4.wgsl");
const ITEM_SCALAR: &str = include_str!("../../shaders/pieces/item_scalar.wgsl");
const ITEM_CHANNELS: &str = include_str!("../../shaders/pieces/item_channels.wgsl");
const WALK: &str = include_str!("../../shaders/pieces/walk.wgsl");
const WALK_REDUCE: &str = include_str!("../../shaders/pieces/walk_reduce.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("../../shaders/pieces/reduce_subgroup.wgsl");
const REDUCE_WORKGROUP: &str = include_str!("../../shaders/pieces/reduce_workgroup.wgsl");
const EPILOGUE: &str = include_str!("../../shaders/pieces/epilogue.wgsl");
const SINGLE_CHANNEL: &str = include_str!("../../shaders/pieces/single_channel.wgsl");

/// How a kernel is assembled and dispatched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Assembly {
    /// Walks the tensor, one dispatch per block, writes elementwise: common, item, walk.
    TensorMap,
    /// Walks the tensor and reduces each task: common, item, walk, reduction, walk_reduce.
    TensorReduce,
    /// One workgroup per channel, reducing: common, reduction.
    PerChannel,
    /// One workgroup: common.
    Single,
    /// Whole tensors bound at once, a workgroup or an invocation per channel, reducing:
    /// common, an item piece, reduction, the channel traversal `single_channel.wgsl` (the single-dispatch passes).
    ChannelTensor,
}

impl Assembly {
    /// Whether its `array<Item>` bindings are tensors of the variant's dtype (with accessors).
    fn binds_tensors(self) -> bool {
        matches!(
            self,
            Assembly::TensorMap | Assembly::TensorReduce | Assembly::ChannelTensor
        )
    }
}

/// A kernel's static description.
pub(crate) struct KernelSpec {
    pub name: &'static str,
    pub source: &'static str,
    pub bindings: &'static [BindingSpec],
    pub assembly: Assembly,
    /// Whether the shader declares `USE_RUNNING`.
    pub has_statistics: bool,
    /// Whether the shader uses `epilogue.wgsl` (`ACT`, `LEAKY_SLOPE`).
    pub has_epilogue: bool,
    /// Whether the shader declares `TO_F16`.
    pub has_direction: bool,
    /// Source placed before everything else (`enable` directives).
    pub prelude: &'static str,
    /// Invocations per workgroup of the non-tensor kernels.
    pub workgroup_size: u32,
}

impl KernelSpec {
    /// A kernel named `name` from `source` (the kernel file, with its ending where it has
    /// one) with `bindings`, assembled as `assembly`; no `USE_RUNNING`, epilogue or `TO_F16`
    /// constant and no prelude until the methods below add them. `workgroup_size` is the
    /// non-tensor kernels' (0 for tensor kernels, whose plan sizes their workgroups).
    pub(crate) const fn new(
        name: &'static str,
        source: &'static str,
        bindings: &'static [BindingSpec],
        assembly: Assembly,
        workgroup_size: u32,
    ) -> Self {
        KernelSpec {
            name,
            source,
            bindings,
            assembly,
            has_statistics: false,
            has_epilogue: false,
            has_direction: false,
            prelude: "",
            workgroup_size,
        }
    }

    /// The shader declares `USE_RUNNING`.
    pub(crate) const fn statistics(mut self) -> Self {
        self.has_statistics = true;
        self
    }

    /// The shader uses `epilogue.wgsl`.
    pub(crate) const fn epilogue(mut self) -> Self {
        self.has_epilogue = true;
        self
    }

    /// The shader declares `TO_F16`.
    pub(crate) const fn direction(mut self) -> Self {
        self.has_direction = true;
        self
    }

    /// `prelude` goes before everything else.
    pub(crate) const fn prelude(mut self, prelude: &'static str) -> Self {
        self.prelude = prelude;
        self
    }
}

/// The `HAS_<NAME>` override of an optional binding.
pub(crate) fn presence_constant(name: &str) -> String {
    format!("HAS_{}", name.to_uppercase())
}

/// The WGSL declarations of a kernel's bindings (and the overrides of its optional ones). A
/// tensor binding (`array<Item>`) holds `Stored` values, the variant's element type at the
/// item's width, and gets accessors that widen to and round from the f32 `Item`:
/// `load_<name>(i)` and, where written, `store_<name>(i, v)`; kernels use those, never the
/// array directly.
fn declarations(spec: &KernelSpec, v: &Variant, read_write: bool) -> String {
    let mut out = String::new();
    let stored = match (v.dtype, v.item) {
        (DType::F32, ItemWidth::Scalar) => "f32",
        (DType::F32, ItemWidth::Vec4 | ItemWidth::Channels4) => "vec4<f32>",
        (DType::F16, ItemWidth::Scalar) => "f16",
        (DType::F16, ItemWidth::Vec4 | ItemWidth::Channels4) => "vec4<f16>",
    };
    let tensor_kernel = spec.assembly.binds_tensors();
    if tensor_kernel {
        out.push_str(&format!("alias Stored = {stored};\n"));
    }
    for (i, b) in spec.bindings.iter().enumerate() {
        let class = match b.access {
            Access::Uniform => "uniform",
            Access::Read if read_write => "storage, read_write",
            Access::Read => "storage, read",
            Access::ReadWrite => "storage, read_write",
        };
        let tensor = tensor_kernel && b.wgsl == "array<Item>";
        let ty = if tensor { "array<Stored>" } else { b.wgsl };
        out.push_str(&format!(
            "@group(0) @binding({i}) var<{class}> {}: {ty};\n",
            b.name
        ));
        if tensor {
            out.push_str(&format!(
                "fn load_{0}(i: u32) -> Item {{ return Item({0}[i]); }}\n",
                b.name
            ));
            if b.access == Access::ReadWrite {
                out.push_str(&format!(
                    "fn store_{0}(i: u32, v: Item) {{ {0}[i] = Stored(v); }}\n",
                    b.name
                ));
            }
        }
        if b.role.optional() {
            out.push_str(&format!(
                "override {}: bool = true;\n",
                presence_constant(b.name)
            ));
        }
    }
    out
}

/// The full WGSL source of a variant.
/// `read_write`: every storage binding declared read_write
/// ([`crate::ContextOptions::read_write_bindings`]).
pub(crate) fn source(v: &Variant, read_write: bool) -> String {
    let spec = v.kernel.spec();
    let reduce = match v.reduction {
        Some(Reduction::Subgroup) => REDUCE_SUBGROUP,
        _ => REDUCE_WORKGROUP,
    };
    let item = match v.item {
        ItemWidth::Vec4 => ITEM_VEC4,
        ItemWidth::Channels4 => ITEM_CHANNELS,
        ItemWidth::Scalar => ITEM_SCALAR,
    };
    let pieces: &[&str] = match spec.assembly {
        Assembly::TensorMap => &[COMMON, item, WALK],
        Assembly::TensorReduce => &[COMMON, item, WALK, reduce, WALK_REDUCE],
        Assembly::PerChannel => &[COMMON, reduce],
        Assembly::Single => &[COMMON],
        Assembly::ChannelTensor => &[COMMON, item, reduce, SINGLE_CHANNEL],
    };
    let mut src = String::with_capacity(16 * 1024);
    src.push_str(spec.prelude);
    if v.dtype == DType::F16 {
        src.push_str("enable f16;\n");
    }
    src.push_str(&declarations(spec, v, read_write));
    for piece in pieces {
        src.push_str(piece);
    }
    if spec.has_epilogue {
        src.push_str(EPILOGUE);
    }
    src.push_str(spec.source);
    src
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::bindings::{RoleKind, MAX_BINDINGS};
    use crate::ops::variant::{Epilogue, Statistics};
    use crate::ops::Kernel;

    #[test]
    fn every_kernel_declares_its_bindings_once_and_in_order() {
        for &kernel in Kernel::ALL {
            let spec = kernel.spec();
            assert!(spec.bindings.len() <= MAX_BINDINGS, "{}", spec.name);
            assert!(spec.bindings.iter().filter(|b| b.role.optional()).count() <= 16);
            let v = Variant {
                kernel,
                walk: None,
                item: ItemWidth::Scalar,
                reduction: None,
                dtype: DType::F32,
                epilogue: Epilogue::NONE,
                workgroup_size: 64,
                statistics: Statistics::Batch,
                to_f16: false,
                own_channel: false,
                present: 0,
            };
            let decls = declarations(spec, &v, false);
            let tensor = spec.assembly.binds_tensors();
            for (i, b) in spec.bindings.iter().enumerate() {
                assert!(decls.contains(&format!("@binding({i}) var")));
                let ty = if tensor && b.wgsl == "array<Item>" {
                    "array<Stored>"
                } else {
                    b.wgsl
                };
                assert!(decls.contains(&format!(" {}: {ty}", b.name)));
                // The shader uses every binding it is given (the per-block uniform is read by
                // walk.wgsl).
                if b.role != RoleKind::Blocks {
                    assert!(
                        spec.source.contains(b.name),
                        "{} does not use {}",
                        spec.name,
                        b.name
                    );
                }
            }
            // And declares none of its own.
            assert!(!spec.source.contains("@binding"), "{}", spec.name);
        }
    }
}
