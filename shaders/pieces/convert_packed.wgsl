// convert.wgsl's access to f16 elements as u32 words (core WGSL).

fn load_halves(w: u32) -> vec2<f32> {
    return unpack2x16float(half[w]);
}

fn store_halves(w: u32, lo: u32, hi: u32, pair: bool) {
    // The last word of an odd count keeps its upper half (it may be another tensor's).
    let upper = select(half[w] & 0xffff0000u, hi << 16u, pair);
    half[w] = lo | upper;
}
