// Batch statistics, pass 1 of 2: Welford partials.
//
// Computes: per task, the (count, mean, M2) of its values, merged with Chan's formula.
//           `planes`: a task is one segment of one plane (workgroup-reduced);
//           `runs`: a task is one plane (LANES invocations, merged through workgroup memory);
//           `columns`: a task is one item column over `chunk` rows (one invocation, no
//           reduction). Partial slots are laid out channel-major: channel * total_tasks + ...
// Bindings: 0 params (uniform), 1 x: array<Item> (read, the block's window),
//           2 partials: array<vec4<f32>> (write, C * total_tasks entries).
// Dispatch: `planes`: dispatch_channels * tasks workgroups; `runs`: rows * dispatch_channels
//           / (WG / LANES) workgroups; `columns`: column groups x row blocks; all folded into a
//           2-D grid.

@group(0) @binding(1) var<storage, read> x: array<Item>;
@group(0) @binding(2) var<storage, read_write> partials: array<vec4<f32>>;

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return welford_merge(a, b);
}

@compute @workgroup_size(WG)
fn planes(inv: Invocation) {
    let task = linear_workgroup(inv.wid, inv.nwg);
    if task >= p.dispatch_channels * p.tasks {
        return;
    }
    let w = walk_start(task, inv.lid);
    var acc = vec4<f32>(0.0);
    for (var step = 0u; step < w.steps; step++) {
        let i = w.first + step * LANES;
        if i >= w.len {
            break;
        }
        acc = welford_push(acc, item_welford(x[w.base + i]), step);
    }
    let total = reduce_workgroup(acc, inv);
    if inv.lid == 0u {
        partials[w.slot] = total;
    }
}

@compute @workgroup_size(WG)
fn columns(cell: Cell) {
    let col = column_start(cell);
    if !col.valid {
        return;
    }
    var acc = vec4<f32>(0.0);
    var idx = col.idx;
    for (var r = col.row; r < col.end; r++) {
        acc = welford_push(acc, item_welford(x[idx]), r - col.row);
        idx += p.row_stride;
    }
    partials[col.slot] = acc;
}

@compute @workgroup_size(WG)
fn runs(cell: Cell) {
    let r = run_start(cell);
    var acc = vec4<f32>(0.0);
    if r.valid {
        var step = 0u;
        for (var i = r.lane; i < p.s_count; i += LANES) {
            acc = welford_push(acc, item_welford(x[r.base + i]), step);
            step++;
        }
    }
    scratch[cell.lid] = acc;
    workgroupBarrier();
    if r.valid && r.lane == 0u {
        var total = acc;
        for (var k = 1u; k < LANES; k++) {
            total = welford_merge(total, scratch[cell.lid + k]);
        }
        partials[r.slot] = total;
    }
}
