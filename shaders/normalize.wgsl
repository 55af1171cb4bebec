// Fused normalize-scale-shift: y = (x - mean) * (invstd * weight) + bias.
//
// (x - mean) * a + b rather than torch's x * a + (b - mean * a): the same cost, and it does not
// cancel when |mean| >> std (a constant channel gives exactly `bias`).
// Computes: with batch statistics (USE_RUNNING = false) `mean` holds save_mean and `spread`
//           save_invstd; with running statistics (eval) `mean` holds running_mean and `spread`
//           running_var, and invstd = 1 / sqrt(running_var + eps).
// Bindings: 0 params (uniform), 1 x: array<Item> (read), 2 y: array<Item> (write),
//           3 mean, 4 spread, 5 weight, 6 bias: array<f32> with C entries (read).
// Dispatch: C * tasks workgroups of WG invocations, folded into a 2-D grid.

@group(0) @binding(1) var<storage, read> x: array<Item>;
@group(0) @binding(2) var<storage, read_write> y: array<Item>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read> spread: array<f32>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<storage, read> bias: array<f32>;

override USE_RUNNING: bool = false;

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
    let m = mean[c];
    let invstd = select(spread[c], 1.0 / sqrt(spread[c] + p.eps), USE_RUNNING);
    let scale = invstd * weight[c];
    let shift = bias[c];
    while w.k < w.end {
        let i = walk_index(w);
        y[i] = (x[i] - Item(m)) * scale + shift;
        walk_next(&w);
    }
}
