
// The per-channel passes' reduction (finalize_stats.wgsl, backward_finalize.wgsl, which each
// define `combine`): channel c's `chan.total_tasks` partials merged in a fixed order per
// invocation, which keeps the result independent of scheduling, then across the workgroup.
fn channel_total(c: u32, inv: Invocation, grid: Grid) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    for (var t = inv.lid; t < chan.total_tasks; t += WG) {
        acc = combine(acc, partials[c * chan.total_tasks + t]);
    }
    return reduce_workgroup(acc, inv, grid);
}
