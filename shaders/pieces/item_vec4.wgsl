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

// An item holds four values of one channel.
const CHANNEL_LANES: u32 = 1u;

fn item_lane(v: Item, j: u32) -> f32 {
    return v.x;
}

fn item_partial(v: Item, j: u32) -> vec4<f32> {
    return item_welford(v);
}

fn item_channel_sum(v: Item, j: u32) -> f32 {
    return item_sum(v);
}

fn item_channel(lanes: vec4<f32>) -> Item {
    return vec4<f32>(lanes.x);
}
