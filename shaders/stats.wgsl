// Batch statistics, pass 1 of 2: Welford partials.
//
// Computes: per task of the walk (walk.wgsl) and channel lane of its items, the (count, mean,
//           M2) of its values, merged with Chan's formula. Partial slots are laid out
//           channel-major: channel * total_tasks + task.
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
    // One partial per channel lane of the items (one lane unless items span channels).
    var acc: array<vec4<f32>, CHANNEL_LANES>;
    var at = s.start;
    for (var k = 0u; k < s.count; k++) {
        let v = load_x(at);
        for (var j = 0u; j < CHANNEL_LANES; j++) {
            acc[j] = welford_push(acc[j], item_partial(v, j), k);
        }
        at += s.stride;
    }
    for (var j = 0u; j < CHANNEL_LANES; j++) {
        if j > 0u && WALK != WALK_COLUMNS {
            // The previous lane's reduction must be read before scratch is written again (the
            // columns walk, the one for items across channels, reduces nothing across
            // invocations: no barrier there).
            workgroupBarrier();
        }
        let total = reduce_span(acc[j], s, inv, grid);
        if s.owner {
            partials[lane_slot(s, j)] = total;
        }
    }
}
