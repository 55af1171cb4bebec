// Backward, pass 2 of 3: each channel's partial sums into the parameter gradients and the
// coefficients of grad_input.
//
// Computes: grad_bias[c] = sum(dy), grad_weight[c] = sum(dy * xhat) = invstd * sum(dy * (x - mean)),
//           coef[c] = vec2(sum(dy) / n, sum(dy * xhat) / n) with n = N * S.
// Statistics: `spread` holds save_invstd (USE_RUNNING = false) or running_var
//           (USE_RUNNING = true, invstd = 1 / sqrt(running_var + eps)).
// Bindings: 0 params (uniform), 1 partials: array<vec4<f32>> (read, C * total_tasks entries),
//           2 spread: array<f32> (read), 3 grad_weight, 4 grad_bias: array<f32> (write),
//           5 coef: array<vec2<f32>> (write); all C entries.
// Dispatch: C workgroups of WG invocations, folded into a 2-D grid.

@group(0) @binding(1) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> spread: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad_weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> coef: array<vec2<f32>>;

override USE_RUNNING: bool = false;

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return a + b;
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let c = linear_workgroup(inv.wid, inv.nwg);
    if c >= p.channels {
        return;
    }
    var acc = vec4<f32>(0.0);
    for (var t = inv.lid; t < p.total_tasks; t += WG) {
        acc += partials[c * p.total_tasks + t];
    }
    let total = reduce_workgroup(acc, inv);
    if inv.lid == 0u {
        let invstd = select(spread[c], 1.0 / sqrt(spread[c] + p.eps), USE_RUNNING);
        let sum_dy = total.x;
        let sum_dy_xhat = total.y * invstd;
        grad_bias[c] = sum_dy;
        grad_weight[c] = sum_dy_xhat;
        let n = f32(p.count);
        coef[c] = vec2<f32>(sum_dy / n, sum_dy_xhat / n);
    }
}
