// The single-dispatch kernels' channel traversal (forward_single.wgsl, backward_single.wgsl):
// per channel, a first pass that accumulates its values in a fixed order, each item lane
// finished from its total, and a second pass that writes from the lanes' coefficients.
//
// Computes: OWN_CHANNEL = true, one invocation per channel (item lane group), over its planes
//           in memory order, row after row, no reduction across invocations; false, one
//           workgroup per channel, invocation i taking values i, i + WG, ... of the channel's
//           (row, s) sequence, the lanes' totals merged across the workgroup with `combine`.
// Layout: value (r, c, s) of the (rows, C, S) tensor at r * row_stride + c * plane + s; a
//           channels-last tensor is (N * S, C, 1). With vec4 items (S = 1, C a multiple of 4),
//           the kernel sees (rows, C / 4, 1) items of four neighbouring channels each: its
//           "channel" c is channels 4c .. 4c + 3, one per lane (CHANNEL_LANES, item_lane), and
//           every per-channel binding is indexed c * CHANNEL_LANES + lane.
// Bindings: shape (Single), the kernel's own.
// Dispatch: OWN_CHANNEL = false: one workgroup per channel (item lane group); true: one
//           invocation per channel (item lane group). Both folded into a 2-D grid.
//
// The kernel supplies: `Acc` with `acc_start(c)`, `acc_add(&acc, i)` and `acc_lane(acc, j)`
// (lane j's partial, merged by `combine`); `finish_channel(ch, total)` (writes the channel's
// results, returns one column of coefficients); `lanes_known()` and `known_lanes(c)` (when the
// coefficients need no first pass: eval); `Coef` with `coef_from(c, lanes)` and
// `write_at(i, k)`; `writes_values()` (whether the second pass runs).

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

// Per lane of the channel: the coefficients, from invocation 0 to the rest.
var<workgroup> coef: mat4x4<f32>;

// Value i of a pass: the first accumulates it, the second writes its output with k (a constant
// per call site, so each loop below compiles to the pass it runs).
fn visit(step: u32, i: u32, acc: ptr<function, Acc>, k: Coef) {
    if step == 0u {
        acc_add(acc, i);
    } else {
        write_at(i, k);
    }
}

// Channel c's values in memory order, row after row. Planes of one value ((N, C),
// channels-last) walk one loop: the nested loops cost lavapipe about 40% more there
// (measured: 256x1024, 4.45 copies against 3.13).
fn own_values(c: u32, step: u32, acc: ptr<function, Acc>, k: Coef) {
    var row = c * shape.plane;
    if shape.s_count == 1u {
        for (var r = 0u; r < shape.rows; r++) {
            visit(step, row, acc, k);
            row += shape.row_stride;
        }
    } else {
        for (var r = 0u; r < shape.rows; r++) {
            for (var s = 0u; s < shape.s_count; s++) {
                visit(step, row + s, acc, k);
            }
            row += shape.row_stride;
        }
    }
}

// Invocation lid's values of channel c: lid, lid + WG, ... of its (row, s) sequence, stepping
// (row, s) without a division per value.
fn shared_values(c: u32, lid: u32, step: u32, acc: ptr<function, Acc>, k: Coef) {
    let s_count = shape.s_count;
    let step_rows = WG / s_count;
    let step_s = WG - step_rows * s_count;
    let base = c * shape.plane;
    var r = lid / s_count;
    var s = lid - r * s_count;
    while r < shape.rows {
        visit(step, base + r * shape.row_stride + s, acc, k);
        s += step_s;
        r += step_rows;
        if s >= s_count {
            s -= s_count;
            r += 1u;
        }
    }
}

fn own_channel(c: u32) {
    if c >= shape.channels {
        return;
    }
    var acc: Acc;
    var lanes: mat4x4<f32>;
    if lanes_known() {
        lanes = known_lanes(c);
    } else {
        acc = acc_start(c);
        own_values(c, 0u, &acc, Coef());
        for (var j = 0u; j < CHANNEL_LANES; j++) {
            lanes[j] = finish_channel(c * CHANNEL_LANES + j, acc_lane(acc, j));
        }
    }
    if writes_values() {
        own_values(c, 1u, &acc, coef_from(c, lanes));
    }
}

fn shared_channel(inv: Invocation, grid: Grid) {
    // Uniform: from the workgroup id and the uniform buffer only, so the barriers below are
    // reached by the whole workgroup or by none of it.
    let c = linear_workgroup(grid.wid, grid.nwg);
    if c >= shape.channels {
        return;
    }
    var acc: Acc;
    var lanes: mat4x4<f32>;
    if lanes_known() {
        lanes = known_lanes(c);
    } else {
        acc = acc_start(c);
        shared_values(c, inv.lid, 0u, &acc, Coef());
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
    if writes_values() {
        shared_values(c, inv.lid, 1u, &acc, coef_from(c, lanes));
    }
}

// One channel per invocation or per workgroup, as OWN_CHANNEL says.
fn single_channel(inv: Invocation, grid: Grid) {
    if OWN_CHANNEL {
        own_channel(linear_workgroup(grid.wid, grid.nwg) * WG + inv.lid);
    } else {
        shared_channel(inv, grid);
    }
}
