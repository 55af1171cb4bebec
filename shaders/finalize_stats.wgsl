// Batch statistics, pass 2 of 2: merge each channel's partials into its mean and invstd.
//
// Computes: stats[c] = vec4(mean, invstd, M2, biased variance) with invstd = 1/sqrt(M2/n + eps),
//           n = N * S taken exactly from the params (partials carry f32 counts).
// Bindings: 0 params (uniform), 1 partials: array<vec4<f32>> (read, C * tasks entries),
//           2 stats: array<vec4<f32>> (write, C entries; PyTorch's save_mean / save_invstd).
// Dispatch: C workgroups of WG invocations, folded into a 2-D grid.

@group(0) @binding(1) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> stats: array<vec4<f32>>;

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return welford_merge(a, b);
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let c = linear_workgroup(inv.wid, inv.nwg);
    if c >= p.channels {
        return;
    }
    var acc = vec4<f32>(0.0);
    // A fixed order per invocation keeps the result independent of scheduling.
    for (var t = inv.lid; t < p.tasks; t += WG) {
        acc = welford_merge(acc, partials[c * p.tasks + t]);
    }
    let total = reduce_workgroup(acc, inv);
    if inv.lid == 0u {
        let var_biased = total.z / f32(p.count);
        let invstd = 1.0 / sqrt(var_biased + p.eps);
        stats[c] = vec4<f32>(total.y, invstd, total.z, var_biased);
    }
}
