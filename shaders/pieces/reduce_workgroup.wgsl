// Workgroup reduction without subgroup operations (the GL backend and adapters without
// Features::SUBGROUP): groups of 16 values merged in order by WG/16 invocations, then by
// invocation 0; two barriers instead of log2(WG).
// The kernel supplies `combine(a, b)`, associative with the zero vector as identity.
// WG must be a multiple of 16.

// Builtins that differ between a workgroup's invocations, and (`Grid`) those that do not. Kept
// apart because WGSL's uniformity analysis (enforced by browsers' compilers) judges a struct as
// a whole: barriers behind a branch on `workgroup_id` are valid only if no per-invocation value
// shares its struct.
struct Invocation {
    @builtin(local_invocation_index) lid: u32,
}

struct Grid {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
}

const GROUP: u32 = 16u;

var<workgroup> scratch: array<vec4<f32>, WG>;

// The result is valid in invocation 0 only.
fn reduce_workgroup(value: vec4<f32>, inv: Invocation, grid: Grid) -> vec4<f32> {
    scratch[inv.lid] = value;
    workgroupBarrier();
    let groups = WG / GROUP;
    if inv.lid < groups {
        let base = inv.lid * GROUP;
        var acc = scratch[base];
        for (var i = 1u; i < GROUP; i++) {
            acc = combine(acc, scratch[base + i]);
        }
        // Only this invocation reads the group's slots, so overwriting its first slot is safe.
        scratch[base] = acc;
    }
    workgroupBarrier();
    var total = vec4<f32>(0.0);
    if inv.lid == 0u {
        total = scratch[0];
        for (var g = 1u; g < groups; g++) {
            total = combine(total, scratch[g * GROUP]);
        }
    }
    return total;
}
