// Batch statistics, pass 1 of 2: Welford partials.
//
// Computes: per task of the walk (walk.wgsl), the (count, mean, M2) of its values, merged
//           with Chan's formula. Partial slots are laid out channel-major:
//           channel * total_tasks + task.
// Bindings: `StatsBindings` in src/ops/stats.rs: geo (Block), x (the block's window),
//           partials (C * total_tasks vec4 partials, written).
// Dispatch: one per block; workgroups per `WalkGeometry::workgroups`, folded into a 2-D grid.

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return welford_merge(a, b);
}

// Merges the item partial `b` into a run partial `a` that already holds `step` items of the
// same count: the ratio n_b / n is then 1 / (step + 1), looked up in the params instead of
// divided per item (the division dominated the statistics pass on CPU adapters).
fn welford_push(a: vec4<f32>, b: vec4<f32>, step: u32) -> vec4<f32> {
    let r = geo.recip[step >> 2u][step & 3u];
    let delta = b.y - a.y;
    return vec4<f32>(a.x + b.x, a.y + delta * r, a.z + b.z + delta * delta * a.x * r, 0.0);
}

@compute @workgroup_size(WG)
fn main(inv: Invocation, grid: Grid) {
    let s = span_start(inv.lid, grid.wid, grid.nwg);
    var acc = vec4<f32>(0.0);
    var at = s.start;
    for (var k = 0u; k < s.count; k++) {
        acc = welford_push(acc, item_welford(load_x(at)), k);
        at += s.stride;
    }
    let total = reduce_span(acc, s, inv, grid);
    if s.owner {
        partials[s.slot] = total;
    }
}
