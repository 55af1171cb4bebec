// Batch statistics, pass 2 of 2: merge each channel's partials into its mean and invstd.
//
// Computes: save_mean[c] = mean, save_invstd[c] = 1 / sqrt(M2 / n + eps), m2[c] = M2, with
//           n = N * S taken exactly from the params (partials carry f32 counts).
// Bindings: 0 params (uniform), 1 partials: array<vec4<f32>> (read, C * total_tasks entries),
//           2 save_mean, 3 save_invstd, 4 m2: array<f32> (write, C entries each; PyTorch's
//           save_mean / save_invstd, and M2 for the unbiased running variance).
// Dispatch: C workgroups of WG invocations, folded into a 2-D grid.

@group(0) @binding(1) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> save_mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> save_invstd: array<f32>;
@group(0) @binding(4) var<storage, read_write> m2: array<f32>;

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
    for (var t = inv.lid; t < p.total_tasks; t += WG) {
        acc = welford_merge(acc, partials[c * p.total_tasks + t]);
    }
    let total = reduce_workgroup(acc, inv);
    if inv.lid == 0u {
        let var_biased = total.z / f32(p.count);
        save_mean[c] = total.y;
        save_invstd[c] = 1.0 / sqrt(var_biased + p.eps);
        m2[c] = total.z;
    }
}
