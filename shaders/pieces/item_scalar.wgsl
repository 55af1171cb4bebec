// Items are single f32 values: used when a plane's length is not a multiple of 4 (or the binding
// is not 16-byte aligned).
alias Item = f32;

// An item holds one value of one channel.
const CHANNEL_LANES: u32 = 1u;

// The value of item v in channel lane j (j < CHANNEL_LANES).
fn item_lane(v: Item, j: u32) -> f32 {
    return v;
}

// The Welford partial (count, mean, M2, 0) of item v's values in channel lane j.
fn item_partial(v: Item, j: u32) -> vec4<f32> {
    return vec4<f32>(1.0, v, 0.0, 0.0);
}

// The sum of item v's values in channel lane j.
fn item_channel_sum(v: Item, j: u32) -> f32 {
    return v;
}

// An item of per-channel values: lane j of `lanes` for each value in channel lane j.
fn item_channel(lanes: vec4<f32>) -> Item {
    return lanes.x;
}
