
// The tensor maps' per-item coefficients (normalize.wgsl, backward_input.wgsl, which each
// define `coefficients(ch)`, four per channel): those of each channel lane of item channel c,
// transposed so that row i holds coefficient i of every lane, for `item_channel` (see
// common.wgsl).
fn lane_coefficients(c: u32) -> mat4x4<f32> {
    var lanes: mat4x4<f32>;
    for (var j = 0u; j < CHANNEL_LANES; j++) {
        lanes[j] = coefficients(c * CHANNEL_LANES + j);
    }
    return transpose(lanes);
}
