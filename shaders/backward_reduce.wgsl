// Backward, pass 1 of 3: partial sums for the parameter gradients.
//
// Computes: per task (as in stats.wgsl), vec4(sum(dy), sum(dy * (x - mean)), 0, 0). Partials
//           are added in a fixed tree order, so results do not depend on scheduling.
// Statistics: `mean` holds save_mean (batch statistics) or running_mean (eval mode).
// Bindings: 0 params (uniform), 1 x, 2 dy: array<Item> (read, the block's window),
//           3 mean: array<f32> (read, C entries), 4 partials: array<vec4<f32>> (write,
//           C * total_tasks entries).
// Dispatch: as stats.wgsl, entry points `planes`, `runs` and `columns`.

@group(0) @binding(1) var<storage, read> x: array<Item>;
@group(0) @binding(2) var<storage, read> dy: array<Item>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> partials: array<vec4<f32>>;

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return a + b;
}

@compute @workgroup_size(WG)
fn planes(inv: Invocation) {
    let task = linear_workgroup(inv.wid, inv.nwg);
    if task >= p.dispatch_channels * p.tasks {
        return;
    }
    let w = walk_start(task, inv.lid);
    let m = Item(mean[w.channel]);
    var sum_dy = 0.0;
    var sum_dy_xmu = 0.0;
    for (var i = w.first; i < min(w.len, w.first + w.steps * LANES); i += LANES) {
        let at = w.base + i;
        let g = dy[at];
        sum_dy += item_sum(g);
        sum_dy_xmu += item_sum(g * (x[at] - m));
    }
    let total = reduce_workgroup(vec4<f32>(sum_dy, sum_dy_xmu, 0.0, 0.0), inv);
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
    let m = Item(mean[col.channel]);
    var sum_dy = 0.0;
    var sum_dy_xmu = 0.0;
    var idx = col.idx;
    for (var r = col.row; r < col.end; r++) {
        let g = dy[idx];
        sum_dy += item_sum(g);
        sum_dy_xmu += item_sum(g * (x[idx] - m));
        idx += p.row_stride;
    }
    partials[col.slot] = vec4<f32>(sum_dy, sum_dy_xmu, 0.0, 0.0);
}

@compute @workgroup_size(WG)
fn runs(cell: Cell) {
    let r = run_start(cell);
    var sum_dy = 0.0;
    var sum_dy_xmu = 0.0;
    if r.valid {
        let m = Item(mean[r.channel]);
        for (var i = r.lane; i < p.s_count; i += LANES) {
            let g = dy[r.base + i];
            sum_dy += item_sum(g);
            sum_dy_xmu += item_sum(g * (x[r.base + i] - m));
        }
    }
    let acc = vec4<f32>(sum_dy, sum_dy_xmu, 0.0, 0.0);
    scratch[cell.lid] = acc;
    workgroupBarrier();
    if r.valid && r.lane == 0u {
        var total = acc;
        for (var k = 1u; k < LANES; k++) {
            total += scratch[cell.lid + k];
        }
        partials[r.slot] = total;
    }
}
