// Backward, pass 3 of 3: grad_input, one fused elementwise pass.
//
// Computes: with batch statistics (USE_RUNNING = false)
//             dx = weight * invstd * (dy - sum(dy)/n - xhat * sum(dy * xhat)/n),
//             xhat = (x - mean) * invstd, sums taken from coef (backward_finalize.wgsl);
//           with running statistics (eval, USE_RUNNING = true)
//             dx = dy * weight / sqrt(running_var + eps), which needs no reduction.
//           HAS_WEIGHT = false uses weight 1 (affine = false) and never reads `weight`.
// Bindings: 0 params (uniform), 1 x: array<Item> (read), 2 dy: array<Item> (read),
//           3 dx: array<Item> (write), 4 mean, 5 spread (save_mean / save_invstd, or
//           running_mean / running_var), 6 weight: array<f32> (read, C entries),
//           7 coef: array<vec2<f32>> (read, C entries).
// Dispatch: C * tasks workgroups of WG invocations, folded into a 2-D grid.

@group(0) @binding(1) var<storage, read> x: array<Item>;
@group(0) @binding(2) var<storage, read> dy: array<Item>;
@group(0) @binding(3) var<storage, read_write> dx: array<Item>;
@group(0) @binding(4) var<storage, read> mean: array<f32>;
@group(0) @binding(5) var<storage, read> spread: array<f32>;
@group(0) @binding(6) var<storage, read> weight: array<f32>;
@group(0) @binding(7) var<storage, read> coef: array<vec2<f32>>;

override USE_RUNNING: bool = false;
override HAS_WEIGHT: bool = true;

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let task = linear_workgroup(wid, nwg);
    if task >= p.channels * p.tasks {
        return;
    }
    var w = walk_start(task, lid);
    let c = w.channel;
    var gamma = 1.0;
    if HAS_WEIGHT {
        gamma = weight[c];
    }
    if USE_RUNNING {
        let scale = gamma / sqrt(spread[c] + p.eps);
        while w.k < w.end {
            let i = walk_index(w);
            dx[i] = dy[i] * scale;
            walk_next(&w);
        }
    } else {
        let invstd = spread[c];
        let m = Item(mean[c]);
        let k = coef[c];
        let scale = gamma * invstd;
        let xhat_coef = invstd * k.y;
        while w.k < w.end {
            let i = walk_index(w);
            dx[i] = (dy[i] - Item(k.x) - (x[i] - m) * xhat_coef) * scale;
            walk_next(&w);
        }
    }
}
