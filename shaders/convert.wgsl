// f16 <-> f32 conversion of an f16 tensor's elements, at the edges of a call on f16
// activations: the f32 kernels then run on f32 copies, so statistics accumulate in f32
// (PyTorch's mixed mode), and each f16 output is rounded once, at the end.
//
// Computes: TO_F16 = false: single[i] = f32(half element i), exact;
//           TO_F16 = true: half element i = f32 -> f16 of single[i], rounded to nearest even
//           (by hand: WGSL leaves the rounding of a narrowing conversion to the
//           implementation, and the golden bounds assume round-to-nearest).
//           NATIVE_F16 = true (adapters with SHADER_F16, `enable f16;`): `half` is bound as
//           array<f16> and each element loaded or stored as an f16; false (core WGSL): as
//           array<u32>, two elements per word, through unpack2x16float / pack2x16float bits.
// Bindings: `ConvertBindings` / `ConvertNativeBindings` in src/ops/convert.rs: chan (Channels;
//           `count` is the number of elements), half, single (both bound read-write; the
//           direction is the pipeline constant TO_F16).
// Dispatch: one invocation per pair of elements (one u32 word of halves), WG per workgroup,
//           folded into a 2-D grid. An odd count's last word keeps its upper half.

override TO_F16: bool = false;

// The binary16 bits of v, rounded to nearest even (overflow to infinity, NaN kept).
fn f16_bits(v: f32) -> u32 {
    let x = bitcast<u32>(v);
    let sign = (x >> 16u) & 0x8000u;
    let e = i32((x >> 23u) & 0xffu);
    var m = x & 0x7fffffu;
    if e == 255 {
        return sign | 0x7c00u | select(0u, 0x200u, m != 0u);
    }
    let he = e - 112;
    if he >= 31 {
        return sign | 0x7c00u;
    }
    if he <= 0 {
        if he < -10 {
            return sign;
        }
        m = m | 0x800000u;
        let shift = u32(14 - he);
        var h = m >> shift;
        let rest = m & ((1u << shift) - 1u);
        let halfway = 1u << (shift - 1u);
        if rest > halfway || (rest == halfway && (h & 1u) != 0u) {
            h += 1u;
        }
        return sign | h;
    }
    // A carry out of the mantissa rounds up into the next binade (or to infinity): correct.
    var h = (u32(he) << 10u) | (m >> 13u);
    let rest = m & 0x1fffu;
    if rest > 0x1000u || (rest == 0x1000u && (h & 1u) != 0u) {
        h += 1u;
    }
    return sign | h;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = linear_workgroup(wid, nwg) * WG + lid;
    let i = 2u * w;
    if i >= chan.count {
        return;
    }
    let pair = i + 1u < chan.count;
    if TO_F16 {
        let lo = f16_bits(single[i]);
        var hi = 0u;
        if pair {
            hi = f16_bits(single[i + 1u]);
        }
        store_halves(w, lo, hi, pair);
    } else {
        let v = load_halves(w);
        single[i] = v.x;
        if pair {
            single[i + 1u] = v.y;
        }
    }
}
