// Fused normalize-scale-shift: y = (x - mean) * (invstd * weight) + bias.
//
// (x - mean) * a + b rather than torch's x * a + (b - mean * a): the same cost, and it does not
// cancel when |mean| >> std (a constant channel gives exactly `bias`).
// Computes: with batch statistics (USE_RUNNING = false) mean and invstd come from stats[c];
//           with running statistics (eval) mean = running_mean[c],
//           invstd = 1 / sqrt(running_var[c] + eps).
// Bindings: 0 params (uniform), 1 x: array<Item> (read), 2 y: array<Item> (write),
//           3 stats: array<vec4<f32>> (read), 4 affine: [weight(C) | bias(C)] (read),
//           5 running: [running_mean(C) | running_var(C)] (read).
// Dispatch: C * tasks workgroups of WG invocations, folded into a 2-D grid; no reduction, so
//           it needs no Invocation builtins beyond the workgroup id.

@group(0) @binding(1) var<storage, read> x: array<Item>;
@group(0) @binding(2) var<storage, read_write> y: array<Item>;
@group(0) @binding(3) var<storage, read> stats: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> affine: array<f32>;
@group(0) @binding(5) var<storage, read> running: array<f32>;

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
    var mean: f32;
    var invstd: f32;
    if USE_RUNNING {
        mean = running[c];
        invstd = 1.0 / sqrt(running[p.channels + c] + p.eps);
    } else {
        let s = stats[c];
        mean = s.x;
        invstd = s.y;
    }
    let scale = invstd * affine[c];
    let shift = affine[p.channels + c];
    while w.k < w.end {
        let i = walk_index(w);
        y[i] = (x[i] - Item(mean)) * scale + shift;
        walk_next(&w);
    }
}
