// Batch statistics, pass 2 of 2: merge each channel's partials into its mean and invstd.
//
// Computes: save_mean[c] = mean, save_invstd[c] = 1 / sqrt(M2 / n + eps), m2[c] = M2, with
//           n = N * S taken exactly from `chan.count` (partials carry f32 counts).
// Bindings: `FinalizeStatsBindings` in src/ops/finalize_stats.rs: chan (Channels), partials
//           (read), save_mean, save_invstd, m2 (written, C entries each; PyTorch's save_mean /
//           save_invstd, and M2 for the unbiased running variance).
// Dispatch: C workgroups of WG invocations, folded into a 2-D grid.

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return welford_merge(a, b);
}

@compute @workgroup_size(WG)
fn main(inv: Invocation, grid: Grid) {
    let c = linear_workgroup(grid.wid, grid.nwg);
    if c >= chan.channels {
        return;
    }
    let total = channel_total(c, inv, grid);
    if inv.lid == 0u {
        let var_biased = total.z / f32(chan.count);
        save_mean[c] = total.y;
        save_invstd[c] = 1.0 / sqrt(var_biased + chan.eps);
        m2[c] = total.z;
    }
}
