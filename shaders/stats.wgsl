// Batch statistics, pass 1 of 2: per-workgroup Welford partials.
//
// Computes: for workgroup task = c * tasks + t, the (count, mean, M2) of the items
//           [t * chunk, (t + 1) * chunk) of channel c, merged with Chan's formula.
// Bindings: 0 params (uniform), 1 x: array<Item> (read), 2 partials: array<vec4<f32>> with
//           C * tasks entries (write).
// Dispatch: C * tasks workgroups of WG invocations, folded into a 2-D grid.

@group(0) @binding(1) var<storage, read> x: array<Item>;
@group(0) @binding(2) var<storage, read_write> partials: array<vec4<f32>>;

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return welford_merge(a, b);
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let task = linear_workgroup(inv.wid, inv.nwg);
    if task >= p.channels * p.tasks {
        return;
    }
    var w = walk_start(task, inv.lid);
    var acc = vec4<f32>(0.0);
    while w.k < w.end {
        acc = welford_merge(acc, item_welford(x[walk_index(w)]));
        walk_next(&w);
    }
    let total = reduce_workgroup(acc, inv);
    if inv.lid == 0u {
        partials[task] = total;
    }
}
