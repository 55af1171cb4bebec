// Training forward in one dispatch, for shapes whose channels each fit one invocation (many
// short channels: (N, C) input, ResNet's 7x7 stages, channels-last tensors with many channels)
// or one workgroup: batch statistics, save_mean / save_invstd and the normalized output with
// its epilogue, without partials written and read back, and without the dispatches between.
// What happens when a channel is finished is the ending's (assembled after this file):
// `forward_single_m2.wgsl` keeps M2 for the separate running update (the kernel
// `forward_single`, within WebGPU's default of 8 storage buffers), `forward_single_update.wgsl`
// updates the running statistics in this dispatch (`forward_single_update`, 10). Each ending
// supplies `channel_done(ch, total)` and `dispatch_done()`.
//
// Computes: per channel c, Welford over its N * S values in a fixed order per invocation,
//           merged across the workgroup with Chan's formula (OWN_CHANNEL = false), or in one
//           invocation over its planes in order (OWN_CHANNEL = true); then
//           y = act((x - mean) * (invstd * weight) + bias [+ residual]) from a second read,
//           which hits the cache for the sizes the planner sends here. The traversal is
//           pieces/single_channel.wgsl's, shared with backward_single.wgsl.
// Layout: as pieces/single_channel.wgsl: (rows, C, S), items of one value or of four
//           neighbouring channels.
// Bindings: `ForwardSingleBindings` in src/ops/forward_single.rs: shape (Single), x (read),
//           y (written), weight?, bias? (C entries), residual? (like x), mean, spread,
//           m2 (C entries): save_mean, save_invstd and M2, written; with running statistics
//           (eval, USE_RUNNING = true) running_mean and running_var, read, and m2 unused.
//           `ForwardSingleUpdateBindings` for the kernel with the update: m2's place taken
//           by upd, running_mean, running_var, tracked? (forward_single_update.wgsl).
// Dispatch: as pieces/single_channel.wgsl: a workgroup or an invocation per channel.

override USE_RUNNING: bool = false;

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return welford_merge(a, b);
}

// Welford's running (count, mean, M2) over one invocation's items, lane by lane: every lane of
// an item is one value of its own channel, so the count is shared. The values are shifted by
// one of the channel's own (`shift`, its first value): the running mean then holds mean - shift,
// of the order of the spread rather than of |mean|, so the rounding of its n updates scales
// with the spread (a channel of 1e4 + N(0, 1e-2) keeps its mean to the last bits), and a
// constant channel stays exact (every shifted value is 0).
struct Acc {
    n: f32,
    mean: Item,
    m2: Item,
    shift: Item,
}

// Channel c's accumulator, shifted by its first value (the same for every invocation).
fn acc_start(c: u32) -> Acc {
    return Acc(0.0, Item(0.0), Item(0.0), load_x(c * shape.plane));
}

fn acc_add(a: ptr<function, Acc>, i: u32) {
    let v = load_x(i) - (*a).shift;
    (*a).n += 1.0;
    let delta = v - (*a).mean;
    (*a).mean += delta / (*a).n;
    (*a).m2 += delta * (v - (*a).mean);
}

// Lane j's Welford partial (count, mean, M2, 0); an invocation without values gives the
// empty partial (zero), which merges exactly.
fn acc_lane(a: Acc, j: u32) -> vec4<f32> {
    let mean = item_lane(a.shift, j) + item_lane(a.mean, j);
    return select(vec4<f32>(a.n, mean, item_lane(a.m2, j), 0.0), vec4<f32>(0.0), a.n == 0.0);
}

// The normalize's coefficients of an item's lanes: y = (x - mean) * scale + shift.
struct Coef {
    mean: Item,
    scale: Item,
    shift: Item,
}

// (mean, invstd * weight, bias, 0) of channel ch.
fn coefficients(ch: u32, channel_mean: f32, invstd: f32) -> vec4<f32> {
    var scale = invstd;
    if HAS_WEIGHT {
        scale *= weight[ch];
    }
    var shift = 0.0;
    if HAS_BIAS {
        shift = bias[ch];
    }
    return vec4<f32>(channel_mean, scale, shift, 0.0);
}

// Writes channel ch's batch statistics from its Welford total; returns its coefficients.
fn finish_channel(ch: u32, total: vec4<f32>) -> vec4<f32> {
    let invstd = 1.0 / sqrt(total.z / f32(shape.count) + shape.eps);
    mean[ch] = total.y;
    spread[ch] = invstd;
    channel_done(ch, total);
    return coefficients(ch, total.y, invstd);
}

// Eval normalizes with running_mean and running_var: no first pass, nothing written.
fn lanes_known() -> bool {
    return USE_RUNNING;
}

fn known_lanes(c: u32) -> mat4x4<f32> {
    var lanes: mat4x4<f32>;
    for (var j = 0u; j < CHANNEL_LANES; j++) {
        let ch = c * CHANNEL_LANES + j;
        lanes[j] = coefficients(ch, mean[ch], 1.0 / sqrt(spread[ch] + shape.eps));
    }
    return lanes;
}

// The item coefficients from one column of `coefficients` per channel lane (see common.wgsl).
fn coef_from(c: u32, lanes: mat4x4<f32>) -> Coef {
    let k = transpose(lanes);
    return Coef(item_channel(k[0]), item_channel(k[1]), item_channel(k[2]));
}

fn writes_values() -> bool {
    return true;
}

fn write_at(i: u32, k: Coef) {
    var z = (load_x(i) - k.mean) * k.scale + k.shift;
    if HAS_RESIDUAL {
        z += load_residual(i);
    }
    store_y(i, activate(z));
}

@compute @workgroup_size(WG)
fn main(inv: Invocation, grid: Grid) {
    if inv.lid == 0u && linear_workgroup(grid.wid, grid.nwg) == 0u {
        dispatch_done();
    }
    single_channel(inv, grid);
}
