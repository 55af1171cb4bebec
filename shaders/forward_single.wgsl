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
//           which hits the cache for the sizes the planner sends here.
// Layout: value (r, c, s) of the (rows, C, S) tensor at r * row_stride + c * plane + s; a
//           channels-last tensor is (N * S, C, 1). With vec4 items (S = 1, C a multiple of 4),
//           the kernel sees (rows, C / 4, 1) items of four neighbouring channels each: its
//           "channel" c is channels 4c .. 4c + 3, one per lane (CHANNEL_LANES, item_lane), and
//           every per-channel binding is indexed c * CHANNEL_LANES + lane.
// Bindings: `ForwardSingleBindings` in src/ops/forward_single.rs: shape (Single), x (read),
//           y (written), weight?, bias? (C entries), residual? (like x), mean, spread,
//           m2 (C entries): save_mean, save_invstd and M2, written; with running statistics
//           (eval, USE_RUNNING = true) running_mean and running_var, read, and m2 unused.
//           `ForwardSingleUpdateBindings` for the kernel with the update: m2's place taken
//           by upd, running_mean, running_var, tracked? (forward_single_update.wgsl).
// Dispatch: OWN_CHANNEL = false: one workgroup per channel (item lane group); true: one
//           invocation per channel (item lane group). Both folded into a 2-D grid.

// Filled by `SingleParams` in src/ops/forward_single.rs.
struct Single {
    channels: u32,      // channels, or groups of CHANNEL_LANES channels with vec4 items
    rows: u32,
    s_count: u32,
    row_stride: u32,
    plane: u32,
    count: u32,         // rows * s_count, the values per channel
    eps: f32,
    _pad: u32,
}

override OWN_CHANNEL: bool = false;
override USE_RUNNING: bool = false;

// Per lane of the channel: (mean, invstd * weight, bias, 0), from invocation 0 to the rest.
var<workgroup> coef: mat4x4<f32>;

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

fn acc_new(shift: Item) -> Acc {
    return Acc(0.0, Item(0.0), Item(0.0), shift);
}

fn acc_add(a: ptr<function, Acc>, x: Item) {
    let v = x - (*a).shift;
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

// Eval: channel ch's coefficients from running_mean and running_var, nothing written.
fn running_coefficients(ch: u32) -> vec4<f32> {
    return coefficients(ch, mean[ch], 1.0 / sqrt(spread[ch] + shape.eps));
}

// The item coefficients from one column of `coefficients` per channel lane (see common.wgsl).
fn coef_from(lanes: mat4x4<f32>) -> Coef {
    let k = transpose(lanes);
    return Coef(item_channel(k[0]), item_channel(k[1]), item_channel(k[2]));
}

fn normalize_at(i: u32, k: Coef) {
    var z = (load_x(i) - k.mean) * k.scale + k.shift;
    if HAS_RESIDUAL {
        z += load_residual(i);
    }
    store_y(i, activate(z));
}

// One invocation per channel: its planes in memory order, row after row; no reduction across
// invocations.
fn own_channel(c: u32) {
    if c >= shape.channels {
        return;
    }
    // Planes of one value ((N, C), channels-last) walk one loop: the nested loops cost
    // lavapipe about 40% more there (measured: 256x1024, 4.45 copies against 3.13).
    let flat = shape.s_count == 1u;
    var row = c * shape.plane;
    var lanes: mat4x4<f32>;
    if USE_RUNNING {
        for (var j = 0u; j < CHANNEL_LANES; j++) {
            lanes[j] = running_coefficients(c * CHANNEL_LANES + j);
        }
    } else {
        var acc = acc_new(load_x(row));
        if flat {
            for (var r = 0u; r < shape.rows; r++) {
                acc_add(&acc, load_x(row));
                row += shape.row_stride;
            }
        } else {
            for (var r = 0u; r < shape.rows; r++) {
                for (var s = 0u; s < shape.s_count; s++) {
                    acc_add(&acc, load_x(row + s));
                }
                row += shape.row_stride;
            }
        }
        for (var j = 0u; j < CHANNEL_LANES; j++) {
            lanes[j] = finish_channel(c * CHANNEL_LANES + j, acc_lane(acc, j));
        }
    }
    let k = coef_from(lanes);
    row = c * shape.plane;
    if flat {
        for (var r = 0u; r < shape.rows; r++) {
            normalize_at(row, k);
            row += shape.row_stride;
        }
    } else {
        for (var r = 0u; r < shape.rows; r++) {
            for (var s = 0u; s < shape.s_count; s++) {
                normalize_at(row + s, k);
            }
            row += shape.row_stride;
        }
    }
}

// One workgroup per channel: invocation i takes values i, i + WG, ... of the channel's
// (row, s) sequence, stepping (row, s) without a division per value.
fn shared_channel(inv: Invocation, grid: Grid) {
    // Uniform: from the workgroup id and the uniform buffer only, so the barriers below are
    // reached by the whole workgroup or by none of it.
    let c = linear_workgroup(grid.wid, grid.nwg);
    if c >= shape.channels {
        return;
    }
    let s_count = shape.s_count;
    let step_rows = WG / s_count;
    let step_s = WG - step_rows * s_count;
    let base = c * shape.plane;
    let first_row = inv.lid / s_count;
    let first_s = inv.lid - first_row * s_count;
    var r = first_row;
    var s = first_s;
    var lanes: mat4x4<f32>;
    if USE_RUNNING {
        for (var j = 0u; j < CHANNEL_LANES; j++) {
            lanes[j] = running_coefficients(c * CHANNEL_LANES + j);
        }
    } else {
        // The channel's first value: the same shift for every invocation.
        var acc = acc_new(load_x(base));
        while r < shape.rows {
            acc_add(&acc, load_x(base + r * shape.row_stride + s));
            s += step_s;
            r += step_rows;
            if s >= s_count {
                s -= s_count;
                r += 1u;
            }
        }
        for (var j = 0u; j < CHANNEL_LANES; j++) {
            // The previous lane's reduction must be read before scratch is written again.
            workgroupBarrier();
            let total = reduce_workgroup(acc_lane(acc, j), inv, grid);
            if inv.lid == 0u {
                coef[j] = finish_channel(c * CHANNEL_LANES + j, total);
            }
        }
        lanes = workgroupUniformLoad(&coef);
    }
    let k = coef_from(lanes);
    r = first_row;
    s = first_s;
    while r < shape.rows {
        normalize_at(base + r * shape.row_stride + s, k);
        s += step_s;
        r += step_rows;
        if s >= s_count {
            s -= s_count;
            r += 1u;
        }
    }
}

@compute @workgroup_size(WG)
fn main(inv: Invocation, grid: Grid) {
    if inv.lid == 0u && linear_workgroup(grid.wid, grid.nwg) == 0u {
        dispatch_done();
    }
    if OWN_CHANNEL {
        own_channel(linear_workgroup(grid.wid, grid.nwg) * WG + inv.lid);
    } else {
        shared_channel(inv, grid);
    }
}
