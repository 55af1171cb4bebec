// Items are vec4<f32> across channels: one value of each of four neighbouring channels, used
// when planes hold one value (S = 1: (N, C) input, channels-last tensors), C is a multiple of
// 4 and the bindings are 16-byte aligned. Kernels see (rows, C / 4, 1) items: their channel c
// is channels 4c .. 4c + 3, channel lane j of an item is channel 4c + j, and every per-channel
// value is looked up per lane.
alias Item = vec4<f32>;

const CHANNEL_LANES: u32 = 4u;

fn item_lane(v: Item, j: u32) -> f32 {
    return v[j];
}

fn item_partial(v: Item, j: u32) -> vec4<f32> {
    return vec4<f32>(1.0, v[j], 0.0, 0.0);
}

fn item_channel_sum(v: Item, j: u32) -> f32 {
    return v[j];
}

fn item_channel(lanes: vec4<f32>) -> Item {
    return lanes;
}
