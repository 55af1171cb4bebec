// Backward, pass 2 of 3: each channel's partial sums into the parameter gradients and the
// coefficients of grad_input.
//
// Computes: grad_bias[c] = sum(dy), grad_weight[c] = sum(dy * xhat) = invstd * sum(dy * (x - mean)),
//           coef[c] = vec2(sum(dy) / n, sum(dy * xhat) / n) with n = N * S. Without
//           grad_weight / grad_bias bindings (HAS_GRAD_WEIGHT / HAS_GRAD_BIAS = false) those
//           are not written.
// Statistics: `spread` holds save_invstd (USE_RUNNING = false) or running_var
//           (USE_RUNNING = true, invstd = 1 / sqrt(running_var + eps)).
// Bindings: `BackwardFinalizeBindings` in src/ops/backward_finalize.rs: chan (Channels),
//           partials (read), spread (read), grad_weight?, grad_bias? (written), coef
//           (vec2 per channel, written); all C entries.
// Dispatch: C workgroups of WG invocations, folded into a 2-D grid.

override USE_RUNNING: bool = false;

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return a + b;
}

@compute @workgroup_size(WG)
fn main(inv: Invocation, grid: Grid) {
    let c = linear_workgroup(grid.wid, grid.nwg);
    if c >= chan.channels {
        return;
    }
    let total = channel_total(c, inv, grid);
    if inv.lid == 0u {
        let invstd = select(spread[c], 1.0 / sqrt(spread[c] + chan.eps), USE_RUNNING);
        coef[c] = param_grads(c, total.x, total.y, invstd) / f32(chan.count);
    }
}
