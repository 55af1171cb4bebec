//! Host side of `shaders/convert.wgsl`: f16 <-> f32 copies of f16 activations, at the edges of
//! a call. Two kernels: `convert_packed.wgsl` (core WGSL, f16 pairs in u32 words) and
//! `convert_native.wgsl` (`enable f16`, on adapters with SHADER_F16). CPU oracle:
//! `half::f16::from_f32` / `to_f32` (round to nearest even, exact widening).

use super::{bindings, Assembly, KernelSpec, Recorder, Specialize, Statistics};

bindings! {
    /// The bindings of `convert.wgsl` with `convert_packed.wgsl`.
    ConvertBindings for Convert {
        /// `count`: the number of elements (`ChannelParams`).
        chan: Uniform Whole "Channels",
        /// The f16 tensor, two elements per word.
        half: ReadWrite Whole "array<u32>",
        /// Its f32 copy.
        single: ReadWrite Whole "array<f32>",
    }
}

bindings! {
    /// The bindings of `convert.wgsl` with `convert_native.wgsl`.
    ConvertNativeBindings for ConvertNative {
        /// `count`: the number of elements (`ChannelParams`).
        chan: Uniform Whole "Channels",
        /// The f16 tensor.
        half: ReadWrite Whole "array<f16>",
        /// Its f32 copy.
        single: ReadWrite Whole "array<f32>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec::new(
    "convert",
    concat!(
        include_str!("../../shaders/pieces/convert_packed.wgsl"),
        include_str!("../../shaders/convert.wgsl")
    ),
    ConvertBindings::SPEC,
    Assembly::Single,
    256,
)
.direction();

pub(crate) const NATIVE_SPEC: KernelSpec = KernelSpec::new(
    "convert_native",
    concat!(
        include_str!("../../shaders/pieces/convert_native.wgsl"),
        include_str!("../../shaders/convert.wgsl")
    ),
    ConvertNativeBindings::SPEC,
    Assembly::Single,
    256,
)
.direction()
.prelude("enable f16;\n");

/// The conversion of `count` values, as dispatched: windows of at most one binding of the f32
/// copy, starting at multiples of 128 values (256-byte offsets on both sides; f16 tensors start
/// at offset 0), each as (first value, values, grid of one invocation per pair of values).
/// The recorder and the planner both take it from here.
pub(crate) fn windows(
    count: u64,
    limits: &super::KernelLimits,
) -> impl Iterator<Item = (u64, u64, [u32; 2])> {
    let chunk = (limits.max_binding / 4 / 128 * 128).max(128);
    let max_grid = limits.max_grid;
    (0..count.div_ceil(chunk)).map(move |k| {
        let start = k * chunk;
        let n = chunk.min(count - start);
        let grid = super::plan::grid(n.div_ceil(2).div_ceil(SPEC.workgroup_size.into()), max_grid);
        (start, n, grid)
    })
}

/// Which way a conversion goes (`TO_F16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Direction {
    ToF32,
    ToF16,
}

impl ConvertBindings {
    /// Records the conversion of `count` elements: one invocation per word, `grid` from
    /// [`super::plan::grid`] over `count.div_ceil(512)` workgroups.
    pub fn encode(&self, rec: &mut Recorder<'_, '_>, direction: Direction, grid: [u32; 2]) {
        rec.dispatch(self, special(direction), grid);
    }
}

impl ConvertNativeBindings {
    /// As [`ConvertBindings::encode`], through f16 storage.
    pub fn encode(&self, rec: &mut Recorder<'_, '_>, direction: Direction, grid: [u32; 2]) {
        rec.dispatch(self, special(direction), grid);
    }
}

fn special(direction: Direction) -> Specialize {
    Specialize {
        to_f16: direction == Direction::ToF16,
        ..Statistics::Batch.into()
    }
}

#[cfg(test)]
mod tests {
    use super::Direction;
    use crate::tensor::{DType, MemoryFormat};
    use crate::{Context, ContextOptions, Functional, Tensor};

    /// Values whose rounding to f16 is delicate: ties (to even, both ways), subnormals, the
    /// largest finite value and just past it, infinities, NaN, negative zero; an odd count.
    fn tricky() -> Vec<f32> {
        let ulp_at_one = 2f32.powi(-10);
        let mut v = vec![
            1.0 + ulp_at_one / 2.0,
            1.0 + 1.5 * ulp_at_one,
            1.0 + ulp_at_one / 2.0 + 1e-7,
            65504.0,
            65519.0,
            65520.0,
            2f32.powi(-24),
            2f32.powi(-25),
            3.0 * 2f32.powi(-26),
            1e-9,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -3.25,
        ];
        v.extend((0..900).map(|i| (i as f32 * 0.7331).sin() * 10f32.powi(i % 9 - 4)));
        v.push(0.1);
        v
    }

    fn same(a: half::f16, b: half::f16) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    /// Both directions match the `half` crate (round to nearest even; exact widening) on the
    /// native path where the adapter has SHADER_F16, and on the packed path, whole and in
    /// windows of 256 elements (1 KiB bindings).
    #[test]
    fn conversions_round_like_half_on_both_paths() {
        for (disable_f16, window) in [
            (false, None),
            (true, None),
            (false, Some(1024)),
            (true, Some(1024)),
        ] {
            let ctx = Context::with_options(ContextOptions {
                disable_f16,
                max_binding_window: window,
                ..ContextOptions::from_env()
            })
            .unwrap();
            let what = format!("shader f16 {} window {window:?}", ctx.adapter().shader_f16);
            let values = tricky();
            let n = values.len();
            let mut f = Functional::new(&ctx);
            let halves =
                Tensor::empty_of(&ctx, &[n, 1], DType::F16, MemoryFormat::Contiguous).unwrap();
            let single = Tensor::from_slice(&ctx, &values, &[n, 1]).unwrap();
            let back = Tensor::empty(&ctx, &[n, 1]).unwrap();
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            f.record_convert(&mut encoder, &halves, &single, Direction::ToF16);
            f.record_convert(&mut encoder, &halves, &back, Direction::ToF32);
            ctx.queue().submit(Some(encoder.finish()));
            let got = halves.to_host_f16().unwrap();
            for (i, (&g, &v)) in got.iter().zip(&values).enumerate() {
                let want = half::f16::from_f32(v);
                assert!(
                    same(g, want),
                    "{what}: {v:e} -> {g} ({:#06x}), want {want} ({:#06x}) at {i}",
                    g.to_bits(),
                    want.to_bits()
                );
            }
            for (&b, &g) in back.to_host().unwrap().iter().zip(&got) {
                assert!(
                    same(half::f16::from_f32(b), g) && b == g.to_f32() || b.is_nan(),
                    "{what}: {b} {g}"
                );
            }
        }
    }
}
