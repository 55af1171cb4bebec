// Items are single f32 values: used when a plane's length is not a multiple of 4 (or the binding
// is not 16-byte aligned).
alias Item = f32;

fn item_welford(v: Item) -> vec4<f32> {
    return vec4<f32>(1.0, v, 0.0, 0.0);
}

fn item_sum(v: Item) -> f32 {
    return v;
}
