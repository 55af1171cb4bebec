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
// Layout: as forward_single.wgsl, (rows, C, S) with value (r, c, s) at
//           r * row_stride + c * plane + s; with vec4 items (S = 1, C a multiple of 4), items
//           of four neighbouring channels, one per lane.
// Bindings: `BackwardSingleBindings` in src/ops/backward_single.rs: shape (Single), x, dy
//           (read), dx? (written), mean, spread (save_mean, save_invstd), weight?,
//           grad_weight?, grad_bias? (written); C entries each for the per-channel ones.
//           `BackwardSingleEpilogueBindings` adds bias?, residual?, grad_residual?
//           (backward_single_epilogue.wgsl).
// Dispatch: OWN_CHANNEL = false: one workgroup per channel; true: one invocation per channel
//           (over its planes in order).
//           Both folded into a 2-D grid.

// Filled by `SingleParams` in src/ops/forward_single.rs.
struct Single {
    channels: u32,      // channels, or groups of CHANNEL_LANES channels with vec4 items
    rows: u32,
    s_count: u32,
    row_stride: u32,
    plane: u32,
    count: u32,
    eps: f32,
    _pad: u32,
}

override OWN_CHANNEL: bool = false;

// Per lane of the channel: grad_input's coefficients, from invocation 0 to the rest.
var<workgroup> coef: mat4x4<f32>;

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return a + b;
}

// One invocation's sums over its items, lane by lane: sum(dy) and sum(dy * (x - mean)).
struct Sums {
    dy: Item,
    dy_xc: Item,
}

// dz = dy, or dy through the epilogue (the ending's `grad_z`); kept as grad_residual where the
// ending has one.
fn sums_add(a: ptr<function, Sums>, i: u32, m: Item, p: Pre) {
    let xm = load_x(i) - m;
    let g = grad_z(i, xm, p);
    keep_dz(i, g);
    (*a).dy += g;
    (*a).dy_xc += g * xm;
}

fn sums_lane(a: Sums, j: u32) -> vec4<f32> {
    return vec4<f32>(item_lane(a.dy, j), item_lane(a.dy_xc, j), 0.0, 0.0);
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
    let sum_dy = sums.x;
    let sum_dy_xhat = sums.y * invstd;
    if HAS_GRAD_BIAS {
        grad_bias[ch] = sum_dy;
    }
    if HAS_GRAD_WEIGHT {
        grad_weight[ch] = sum_dy_xhat;
    }
    var gamma = 1.0;
    if HAS_WEIGHT {
        gamma = weight[ch];
    }
    let n = f32(shape.count);
    let scale = gamma * invstd;
    return vec4<f32>(scale, sum_dy / n * scale, mean[ch], invstd * (sum_dy_xhat / n) * scale);
}

// grad_input's coefficients of an item's lanes: dx = dy * a - b - (x - m) * d.
struct Coef {
    a: Item,
    b: Item,
    m: Item,
    d: Item,
}

// The item coefficients from one column of `finish_channel` per channel lane (see common.wgsl).
fn coef_from(lanes: mat4x4<f32>) -> Coef {
    let k = transpose(lanes);
    return Coef(item_channel(k[0]), item_channel(k[1]), item_channel(k[2]), item_channel(k[3]));
}

fn grad_input_at(i: u32, k: Coef, p: Pre) {
    let xm = load_x(i) - k.m;
    store_dx(i, grad_z(i, xm, p) * k.a - k.b - xm * k.d);
}

// One invocation per channel: its planes in memory order, row after row (one loop for planes
// of one value, as in forward_single.wgsl).
fn own_channel(c: u32) {
    if c >= shape.channels {
        return;
    }
    let flat = shape.s_count == 1u;
    let m = item_mean(c);
    let p = pre_of(c);
    var sums = Sums(Item(0.0), Item(0.0));
    var row = c * shape.plane;
    if flat {
        for (var r = 0u; r < shape.rows; r++) {
            sums_add(&sums, row, m, p);
            row += shape.row_stride;
        }
    } else {
        for (var r = 0u; r < shape.rows; r++) {
            for (var s = 0u; s < shape.s_count; s++) {
                sums_add(&sums, row + s, m, p);
            }
            row += shape.row_stride;
        }
    }
    var lanes: mat4x4<f32>;
    for (var j = 0u; j < CHANNEL_LANES; j++) {
        lanes[j] = finish_channel(c * CHANNEL_LANES + j, sums_lane(sums, j));
    }
    let k = coef_from(lanes);
    if HAS_DX {
        row = c * shape.plane;
        if flat {
            for (var r = 0u; r < shape.rows; r++) {
                grad_input_at(row, k, p);
                row += shape.row_stride;
            }
        } else {
            for (var r = 0u; r < shape.rows; r++) {
                for (var s = 0u; s < shape.s_count; s++) {
                    grad_input_at(row + s, k, p);
                }
                row += shape.row_stride;
            }
        }
    }
}

// One workgroup per channel, stepping (row, s) as forward_single.wgsl does.
fn shared_channel(inv: Invocation, grid: Grid) {
    // Uniform (workgroup id and uniform buffer only): the barriers below are reached by the
    // whole workgroup or by none of it.
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
    let m = item_mean(c);
    let p = pre_of(c);
    var sums = Sums(Item(0.0), Item(0.0));
    var r = first_row;
    var s = first_s;
    while r < shape.rows {
        sums_add(&sums, base + r * shape.row_stride + s, m, p);
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
        let total = reduce_workgroup(sums_lane(sums, j), inv, grid);
        if inv.lid == 0u {
            coef[j] = finish_channel(c * CHANNEL_LANES + j, total);
        }
    }
    let k = coef_from(workgroupUniformLoad(&coef));
    if HAS_DX {
        r = first_row;
        s = first_s;
        while r < shape.rows {
            grad_input_at(base + r * shape.row_stride + s, k, p);
            s += step_s;
            r += step_rows;
            if s >= s_count {
                s -= s_count;
                r += 1u;
            }
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
