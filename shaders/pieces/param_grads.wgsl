
// The backward's parameter gradients of channel ch (backward_finalize.wgsl,
// backward_single.wgsl) from its sums sum(dz) and sum(dz * (x - mean)): grad_bias = sum(dz)
// and grad_weight = sum(dz * xhat) = invstd * sum(dz * (x - mean)), each where it is bound;
// returns (sum(dz), sum(dz * xhat)).
fn param_grads(ch: u32, sum_dz: f32, sum_dz_xc: f32, invstd: f32) -> vec2<f32> {
    let sum_dz_xhat = sum_dz_xc * invstd;
    if HAS_GRAD_BIAS {
        grad_bias[ch] = sum_dz;
    }
    if HAS_GRAD_WEIGHT {
        grad_weight[ch] = sum_dz_xhat;
    }
    return vec2<f32>(sum_dz, sum_dz_xhat);
}
