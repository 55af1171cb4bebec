// Backward, pass 1 of 3: per-workgroup sums for the parameter gradients.
//
// Computes: for workgroup task = c * tasks + t, over the task's items of channel c,
//           vec4(sum(dy), sum(dy * (x - mean)), 0, 0). Partials are added in a fixed tree
//           order, so results do not depend on scheduling.
// Statistics: with USE_RUNNING = false `mean` holds save_mean; with USE_RUNNING = true it holds
//           running_mean (eval mode with tracked buffers).
// Bindings: 0 params (uniform), 1 x: array<Item> (read), 2 dy: array<Item> (read),
//           3 mean: array<f32> (read, C entries), 4 partials: array<vec4<f32>> (write,
//           C * tasks entries).
// Dispatch: C * tasks workgroups of WG invocations, folded into a 2-D grid.

@group(0) @binding(1) var<storage, read> x: array<Item>;
@group(0) @binding(2) var<storage, read> dy: array<Item>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> partials: array<vec4<f32>>;

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return a + b;
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let task = linear_workgroup(inv.wid, inv.nwg);
    if task >= p.channels * p.tasks {
        return;
    }
    var w = walk_start(task, inv.lid);
    let m = Item(mean[w.channel]);
    var sum_dy = 0.0;
    var sum_dy_xmu = 0.0;
    while w.k < w.end {
        let i = walk_index(w);
        let g = dy[i];
        sum_dy += item_sum(g);
        sum_dy_xmu += item_sum(g * (x[i] - m));
        walk_next(&w);
    }
    let total = reduce_workgroup(vec4<f32>(sum_dy, sum_dy_xmu, 0.0, 0.0), inv);
    if inv.lid == 0u {
        partials[task] = total;
    }
}
