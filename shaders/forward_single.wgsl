// Training forward in one dispatch, for shapes whose channels each fit one invocation (many
// short channels: (N, C) input, ResNet's 7x7 stages, channels-last tensors with many channels)
// or one workgroup: batch statistics, save_mean / save_invstd / M2 and the
// normalized output with its epilogue, without partials written and read back, and without
// the three dispatches between. The running-statistics update stays its own small dispatch
// (`update_running.wgsl`): adding its four bindings would pass WebGPU's default of 8 storage
// buffers per stage.
//
// Computes: per channel c, Welford over its N * S values in a fixed order per invocation,
//           merged across the workgroup with Chan's formula (OWN_CHANNEL = false), or in one
//           invocation over its planes in order (OWN_CHANNEL = true); then
//           y = act((x - mean) * (invstd * weight) + bias [+ residual]) from a second read,
//           which hits the cache for the sizes the planner sends here.
// Layout: value (r, c, s) of the (rows, C, S) tensor at r * row_stride + c * plane + s; a
//           channels-last tensor is (N * S, C, 1).
// Bindings: `ForwardSingleBindings` in src/ops/forward_single.rs: shape (Single), x (read),
//           y (written), weight?, bias? (C entries), residual? (like x), mean, spread,
//           m2 (C entries): save_mean, save_invstd and M2, written; with running statistics
//           (eval, USE_RUNNING = true) running_mean and running_var, read, and m2 unused.
// Dispatch: OWN_CHANNEL = false: one workgroup per channel; true: one invocation per channel.
//           Both folded into a 2-D grid.

// Filled by `SingleParams` in src/ops/forward_single.rs.
struct Single {
    channels: u32,
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

var<workgroup> coef: vec4<f32>;

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return welford_merge(a, b);
}

// Welford's update with the value `v` (count, mean, M2).
fn welford_add(a: vec4<f32>, v: f32) -> vec4<f32> {
    let n = a.x + 1.0;
    let delta = v - a.y;
    let mean = a.y + delta / n;
    return vec4<f32>(n, mean, a.z + delta * (v - mean), 0.0);
}

// (mean, invstd * weight, bias) of channel c.
fn coefficients(c: u32, channel_mean: f32, invstd: f32) -> vec4<f32> {
    var scale = invstd;
    if HAS_WEIGHT {
        scale *= weight[c];
    }
    var shift = 0.0;
    if HAS_BIAS {
        shift = bias[c];
    }
    return vec4<f32>(channel_mean, scale, shift, 0.0);
}

// Writes channel c's batch statistics; returns its coefficients.
fn finish_channel(c: u32, total: vec4<f32>) -> vec4<f32> {
    let invstd = 1.0 / sqrt(total.z / f32(shape.count) + shape.eps);
    mean[c] = total.y;
    spread[c] = invstd;
    m2[c] = total.z;
    return coefficients(c, total.y, invstd);
}

// Eval: the coefficients from running_mean and running_var, nothing written.
fn running_coefficients(c: u32) -> vec4<f32> {
    return coefficients(c, mean[c], 1.0 / sqrt(spread[c] + shape.eps));
}

fn normalize_at(i: u32, k: vec4<f32>) {
    var z = (load_x(i) - Item(k.x)) * k.y + k.z;
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
    var k: vec4<f32>;
    if USE_RUNNING {
        k = running_coefficients(c);
    } else {
        var acc = vec4<f32>(0.0);
        if flat {
            for (var r = 0u; r < shape.rows; r++) {
                acc = welford_add(acc, load_x(row));
                row += shape.row_stride;
            }
        } else {
            for (var r = 0u; r < shape.rows; r++) {
                for (var s = 0u; s < shape.s_count; s++) {
                    acc = welford_add(acc, load_x(row + s));
                }
                row += shape.row_stride;
            }
        }
        k = finish_channel(c, acc);
    }
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
    var k: vec4<f32>;
    if USE_RUNNING {
        k = running_coefficients(c);
    } else {
        var acc = vec4<f32>(0.0);
        while r < shape.rows {
            acc = welford_add(acc, load_x(base + r * shape.row_stride + s));
            s += step_s;
            r += step_rows;
            if s >= s_count {
                s -= s_count;
                r += 1u;
            }
        }
        let total = reduce_workgroup(acc, inv, grid);
        if inv.lid == 0u {
            coef = finish_channel(c, total);
        }
        k = workgroupUniformLoad(&coef);
    }
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
    if OWN_CHANNEL {
        own_channel(linear_workgroup(grid.wid, grid.nwg) * WG + inv.lid);
    } else {
        shared_channel(inv, grid);
    }
}
