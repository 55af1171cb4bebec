// Backward, pass 1 of 3: partial sums for the parameter gradients.
//
// Computes: per task of the walk (walk.wgsl), vec4(sum(dy), sum(dy * (x - mean)), 0, 0).
//           Partials are added in a fixed tree order, so results do not depend on scheduling.
// Statistics: `mean` holds save_mean (batch statistics) or running_mean (eval mode).
// Bindings: `BackwardReduceBindings` in src/ops/backward_reduce.rs: geo (Block), x and dy (the
//           block's window), mean (C entries), partials (C * total_tasks entries, written).
// Dispatch: one per block; workgroups per `WalkGeometry::workgroups`, folded into a 2-D grid.

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return a + b;
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let s = span_start(inv.lid, inv.wid, inv.nwg);
    let m = Item(mean[s.channel]);
    var sum_dy = 0.0;
    var sum_dy_xmu = 0.0;
    var at = s.start;
    for (var k = 0u; k < s.count; k++) {
        let g = dy[at];
        sum_dy += item_sum(g);
        sum_dy_xmu += item_sum(g * (x[at] - m));
        at += s.stride;
    }
    let total = reduce_span(vec4<f32>(sum_dy, sum_dy_xmu, 0.0, 0.0), s, inv);
    if s.owner {
        partials[s.slot] = total;
    }
}
