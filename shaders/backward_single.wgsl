// Training backward in one dispatch, for the shapes the single-dispatch forward takes
// (forward_single.wgsl): the channel's sums, grad_weight and grad_bias, then grad_input from a
// second read, without partials and without the dispatches between, with this batch's
// statistics. dz, the gradient at the pre-activation, is the ending's (assembled after this
// file): `backward_single_plain.wgsl` (no epilogue: dz = dy; the kernel `backward_single`,
// within WebGPU's default of 8 storage buffers) or `backward_single_epilogue.wgsl` (dz = dy *
// act'(z) with z rebuilt per value, grad_residual = dz; `backward_single_epilogue`, 11).
//
// Computes: per channel c, sum(dz) and sum(dz * (x - mean)) in a fixed order per invocation
//           (merged across the workgroup in order when OWN_CHANNEL = false, one invocation over
//           the channel's planes when true); then
//           grad_bias = sum(dz), grad_weight = invstd * sum(dz * (x - mean)), and
//           dx = weight * invstd * (dz - sum(dz)/n - xhat * sum(dz * xhat)/n), written as
//           backward_input.wgsl writes it: dz * a.x - a.y - (x - a.z) * a.w, from dz rebuilt
//           on the second read.
// Layout: as pieces/single_channel.wgsl (the traversal, shared with forward_single.wgsl):
//           (rows, C, S), items of one value or of four neighbouring channels.
// Bindings: `BackwardSingleBindings` in src/ops/backward_single.rs: shape (Single), x, dy
//           (read), dx? (written), mean, spread (save_mean, save_invstd), weight?,
//           grad_weight?, grad_bias? (written); C entries each for the per-channel ones.
//           `BackwardSingleEpilogueBindings` adds bias?, residual?, grad_residual?
//           (backward_single_epilogue.wgsl).
// Dispatch: as pieces/single_channel.wgsl: a workgroup or an invocation per channel.

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return a + b;
}

// One invocation's sums over its items, lane by lane: sum(dz) and sum(dz * (x - mean)), with
// the channel's mean and the ending's per-channel values.
struct Acc {
    dy: Item,
    dy_xc: Item,
    m: Item,
    p: Pre,
}

fn acc_start(c: u32) -> Acc {
    return Acc(Item(0.0), Item(0.0), item_mean(c), pre_of(c));
}

// dz = dy, or dy through the epilogue (the ending's `grad_z`); kept as grad_residual where the
// ending has one.
fn acc_add(a: ptr<function, Acc>, i: u32) {
    let xm = load_x(i) - (*a).m;
    let g = grad_z(i, xm, (*a).p);
    keep_dz(i, g);
    (*a).dy += g;
    (*a).dy_xc += g * xm;
}

fn acc_lane(a: Acc, j: u32) -> vec4<f32> {
    return vec4<f32>(item_lane(a.dy, j), item_lane(a.dy_xc, j), 0.0, 0.0);
}

// The backward always reads its values: the statistics are this batch's.
fn lanes_known() -> bool {
    return false;
}

fn known_lanes(c: u32) -> mat4x4<f32> {
    return mat4x4<f32>();
}

// The means of an item's lanes (save_mean).
fn item_mean(c: u32) -> Item {
    var m = vec4<f32>(0.0);
    for (var j = 0u; j < CHANNEL_LANES; j++) {
        m[j] = mean[c * CHANNEL_LANES + j];
    }
    return item_channel(m);
}

// Writes channel ch's parameter gradients from its sums (sum(dy), sum(dy * (x - mean))); returns
// grad_input's coefficients (backward_input.wgsl's `coefficients`).
fn finish_channel(ch: u32, sums: vec4<f32>) -> vec4<f32> {
    let invstd = spread[ch];
    let g = param_grads(ch, sums.x, sums.y, invstd);
    let sum_dy = g.x;
    let sum_dy_xhat = g.y;
    var gamma = 1.0;
    if HAS_WEIGHT {
        gamma = weight[ch];
    }
    let n = f32(shape.count);
    let scale = gamma * invstd;
    return vec4<f32>(scale, sum_dy / n * scale, mean[ch], invstd * (sum_dy_xhat / n) * scale);
}

// grad_input's coefficients of an item's lanes: dx = dz * a - b - (x - m) * d, with the
// ending's per-channel values for dz.
struct Coef {
    a: Item,
    b: Item,
    m: Item,
    d: Item,
    p: Pre,
}

// The item coefficients from one column of `finish_channel` per channel lane (see common.wgsl).
fn coef_from(c: u32, lanes: mat4x4<f32>) -> Coef {
    let k = transpose(lanes);
    return Coef(
        item_channel(k[0]),
        item_channel(k[1]),
        item_channel(k[2]),
        item_channel(k[3]),
        pre_of(c),
    );
}

fn writes_values() -> bool {
    return HAS_DX;
}

fn write_at(i: u32, k: Coef) {
    let xm = load_x(i) - k.m;
    store_dx(i, grad_z(i, xm, k.p) * k.a - k.b - xm * k.d);
}

@compute @workgroup_size(WG)
fn main(inv: Invocation, grid: Grid) {
    single_channel(inv, grid);
}
