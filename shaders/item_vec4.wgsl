// Items are vec4<f32>: used when every plane holds a multiple of 4 values and the binding is
// 16-byte aligned, so that no vec4 straddles two planes.
alias Item = vec4<f32>;

// The exact (count, mean, M2) of four values. Pairwise means keep a constant input exact:
// 0.5 * (v + v) == v, whereas (v + v + v + v) * 0.25 can round at the third addition.
fn item_welford(v: Item) -> vec4<f32> {
    let mean = 0.5 * (0.5 * (v.x + v.y) + 0.5 * (v.z + v.w));
    let d = v - vec4<f32>(mean);
    return vec4<f32>(4.0, mean, dot(d, d), 0.0);
}

fn item_sum(v: Item) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// Channel-tensor kernels (forward_single.wgsl, backward_single.wgsl) read vec4 items across
// channels instead: planes of one value (S = 1), C a multiple of 4, so an item holds one value
// of each of four neighbouring channels and a lane is a channel.
const ITEM_LANES: u32 = 4u;

fn item_lane(v: Item, j: u32) -> f32 {
    return v[j];
}

fn item_from(v: vec4<f32>) -> Item {
    return v;
}
