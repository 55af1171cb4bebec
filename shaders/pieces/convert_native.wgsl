// convert.wgsl's access to f16 elements as f16 values (SHADER_F16).

fn load_halves(w: u32) -> vec2<f32> {
    return vec2<f32>(f32(half[2u * w]), f32(half[2u * w + 1u]));
}

fn store_halves(w: u32, lo: u32, hi: u32, pair: bool) {
    // The rounded halves widened back: exactly representable, so the f16 conversions below
    // do not round again.
    let v = unpack2x16float(lo | (hi << 16u));
    half[2u * w] = f16(v.x);
    if pair {
        half[2u * w + 1u] = f16(v.y);
    }
}
