// A task's partial from its invocations' values, for the walk in force (see walk.wgsl):
// planes reduce the whole workgroup, runs their LANES invocations, columns nothing (one
// invocation per task). The result is valid where `s.owner`. Assembled after a reduction piece
// (`reduce_subgroup.wgsl` or `reduce_workgroup.wgsl`), whose `scratch` and `reduce_workgroup`
// it uses; the kernel supplies `combine`. Every invocation must call it (it has barriers).

fn reduce_span(value: vec4<f32>, s: Span, inv: Invocation, grid: Grid) -> vec4<f32> {
    if WALK == WALK_PLANES {
        return reduce_workgroup(value, inv, grid);
    }
    if WALK == WALK_RUNS {
        scratch[inv.lid] = value;
        workgroupBarrier();
        var total = value;
        if s.owner {
            for (var k = 1u; k < LANES; k++) {
                total = combine(total, scratch[inv.lid + k]);
            }
        }
        return total;
    }
    return value;
}
