// Training backward in one dispatch, for the shapes the single-dispatch forward takes
// (forward_single.wgsl): the channel's sums, grad_weight and grad_bias, then grad_input from a
// second read, without partials and without the dispatches between. Only without an epilogue
// (identity, no residual) and with this batch's statistics: the epilogue's extra bindings
// (bias, residual, dz) would pass WebGPU's default of 8 storage buffers per stage.
//
// Computes: per channel c, sum(dy) and sum(dy * (x - mean)) in a fixed order per invocation
//           (merged across the workgroup in order when OWN_CHANNEL = false, one invocation over
//           the channel's planes when true); then
//           grad_bias = sum(dy), grad_weight = invstd * sum(dy * (x - mean)), and
//           dx = weight * invstd * (dy - sum(dy)/n - xhat * sum(dy * xhat)/n), written as
//           backward_input.wgsl writes it: dy * a.x - a.y - (x - a.z) * a.w.
// Layout: as forward_single.wgsl, (rows, C, S) with value (r, c, s) at
//           r * row_stride + c * plane + s.
// Bindings: `BackwardSingleBindings` in src/ops/backward_single.rs: shape (Single), x, dy
//           (read), dx? (written), mean, spread (save_mean, save_invstd), weight?,
//           grad_weight?, grad_bias? (written); C entries each for the per-channel ones.
// Dispatch: OWN_CHANNEL = false: one workgroup per channel; true: one invocation per channel
//           (over its planes in order).
//           Both folded into a 2-D grid.

// Filled by `SingleParams` in src/ops/forward_single.rs.
struct Single {
    channels: u32,
    rows: u32,
    s_count: u32,
    row_stride: u32,
    plane: u32,
    count: u32,
    eps: f32,
    _pad: u32,
}

override OWN_CHANNEL: bool = false;

var<workgroup> coef: vec4<f32>;

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return a + b;
}

// Writes channel c's parameter gradients from its sums (sum(dy), sum(dy * (x - mean))); returns
// grad_input's coefficients (backward_input.wgsl's `coefficients`).
fn finish_channel(c: u32, sums: vec4<f32>) -> vec4<f32> {
    let invstd = spread[c];
    let sum_dy = sums.x;
    let sum_dy_xhat = sums.y * invstd;
    if HAS_GRAD_BIAS {
        grad_bias[c] = sum_dy;
    }
    if HAS_GRAD_WEIGHT {
        grad_weight[c] = sum_dy_xhat;
    }
    var gamma = 1.0;
    if HAS_WEIGHT {
        gamma = weight[c];
    }
    let n = f32(shape.count);
    let scale = gamma * invstd;
    return vec4<f32>(scale, sum_dy / n * scale, mean[c], invstd * (sum_dy_xhat / n) * scale);
}

fn grad_input_at(i: u32, a: vec4<f32>) {
    store_dx(i, load_dy(i) * a.x - a.y - (load_x(i) - a.z) * a.w);
}

// One invocation per channel: its planes in memory order, row after row (one loop for planes
// of one value, as in forward_single.wgsl).
fn own_channel(c: u32) {
    if c >= shape.channels {
        return;
    }
    let flat = shape.s_count == 1u;
    let m = mean[c];
    var sums = vec4<f32>(0.0);
    var row = c * shape.plane;
    if flat {
        for (var r = 0u; r < shape.rows; r++) {
            let dy = load_dy(row);
            sums.x += dy;
            sums.y += dy * (load_x(row) - m);
            row += shape.row_stride;
        }
    } else {
        for (var r = 0u; r < shape.rows; r++) {
            for (var s = 0u; s < shape.s_count; s++) {
                let dy = load_dy(row + s);
                sums.x += dy;
                sums.y += dy * (load_x(row + s) - m);
            }
            row += shape.row_stride;
        }
    }
    let a = finish_channel(c, sums);
    if HAS_DX {
        row = c * shape.plane;
        if flat {
            for (var r = 0u; r < shape.rows; r++) {
                grad_input_at(row, a);
                row += shape.row_stride;
            }
        } else {
            for (var r = 0u; r < shape.rows; r++) {
                for (var s = 0u; s < shape.s_count; s++) {
                    grad_input_at(row + s, a);
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
    let m = mean[c];
    var sums = vec4<f32>(0.0);
    var r = first_row;
    var s = first_s;
    while r < shape.rows {
        let i = base + r * shape.row_stride + s;
        let dy = load_dy(i);
        sums.x += dy;
        sums.y += dy * (load_x(i) - m);
        s += step_s;
        r += step_rows;
        if s >= s_count {
            s -= s_count;
            r += 1u;
        }
    }
    let total = reduce_workgroup(sums, inv, grid);
    if inv.lid == 0u {
        coef = finish_channel(c, total);
    }
    let a = workgroupUniformLoad(&coef);
    if HAS_DX {
        r = first_row;
        s = first_s;
        while r < shape.rows {
            grad_input_at(base + r * shape.row_stride + s, a);
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
