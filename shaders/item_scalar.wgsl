// Items are single f32 values: used when a plane's length is not a multiple of 4 (or the binding
// is not 16-byte aligned).
alias Item = f32;

fn item_welford(v: Item) -> vec4<f32> {
    return vec4<f32>(1.0, v, 0.0, 0.0);
}

fn item_sum(v: Item) -> f32 {
    return v;
}

// Channel-tensor kernels (forward_single.wgsl, backward_single.wgsl): an item holds one
// channel's value.
const ITEM_LANES: u32 = 1u;

fn item_lane(v: Item, j: u32) -> f32 {
    return v;
}

fn item_from(v: vec4<f32>) -> Item {
    return v.x;
}
