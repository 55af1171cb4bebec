// Workgroup reduction with subgroup shuffles: a shuffle tree inside each subgroup, one barrier,
// then invocation 0 merges the per-subgroup results in order. Fewer barriers than a
// shared-memory tree, which matters on lavapipe where each barrier is costly.
// The kernel supplies `combine(a, b)`, associative with the zero vector as identity.
// Assumes subgroups are contiguous runs of local_invocation_index, as on every known driver
// for 1-D workgroups.

// Builtins that differ between a workgroup's invocations, and (`Grid`) those that do not, apart
// for WGSL's uniformity analysis (see reduce_workgroup.wgsl): the shuffle loop's bound,
// `subgroup_size`, must be provably uniform.
struct Invocation {
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
}

struct Grid {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_size) sg_size: u32,
}

var<workgroup> scratch: array<vec4<f32>, WG>;

// The result is valid in invocation 0 only.
fn reduce_workgroup(value: vec4<f32>, inv: Invocation, grid: Grid) -> vec4<f32> {
    var v = value;
    for (var off = grid.sg_size >> 1u; off > 0u; off = off >> 1u) {
        let other = subgroupShuffleDown(v, off);
        v = combine(v, select(vec4<f32>(0.0), other, inv.lane + off < grid.sg_size));
    }
    if inv.lane == 0u {
        scratch[inv.lid / grid.sg_size] = v;
    }
    workgroupBarrier();
    var total = vec4<f32>(0.0);
    if inv.lid == 0u {
        total = scratch[0];
        let groups = WG / grid.sg_size;
        for (var i = 1u; i < groups; i++) {
            total = combine(total, scratch[i]);
        }
    }
    return total;
}
