// Fused normalize-scale-shift: y = (x - mean) * (invstd * weight) + bias.
//
// (x - mean) * a + b rather than torch's x * a + (b - mean * a): the same cost, and it does not
// cancel when |mean| >> std (a constant channel gives exactly `bias`).
// Computes: with batch statistics (USE_RUNNING = false) `mean` holds save_mean and `spread`
//           save_invstd; with running statistics (eval) `mean` holds running_mean and `spread`
//           running_var, and invstd = 1 / sqrt(running_var + eps).
// Bindings: 0 params (uniform), 1 x: array<Item> (read), 2 y: array<Item> (write), both the
//           block's window; 3 mean, 4 spread, 5 weight, 6 bias: array<f32>, C entries (read).
// Dispatch: as stats.wgsl, entry points `planes`, `runs` and `columns`.

@group(0) @binding(1) var<storage, read> x: array<Item>;
@group(0) @binding(2) var<storage, read_write> y: array<Item>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read> spread: array<f32>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<storage, read> bias: array<f32>;

override USE_RUNNING: bool = false;

// (mean, invstd * weight, bias) of channel c.
fn coefficients(c: u32) -> vec3<f32> {
    let invstd = select(spread[c], 1.0 / sqrt(spread[c] + p.eps), USE_RUNNING);
    return vec3<f32>(mean[c], invstd * weight[c], bias[c]);
}

@compute @workgroup_size(WG)
fn planes(cell: Cell) {
    let task = linear_workgroup(cell.wid, cell.nwg);
    if task >= p.dispatch_channels * p.tasks {
        return;
    }
    let w = walk_start(task, cell.lid);
    let k = coefficients(w.channel);
    let m = Item(k.x);
    for (var i = w.first; i < min(w.len, w.first + w.steps * LANES); i += LANES) {
        let at = w.base + i;
        y[at] = (x[at] - m) * k.y + k.z;
    }
}

@compute @workgroup_size(WG)
fn columns(cell: Cell) {
    let col = column_start(cell);
    if !col.valid {
        return;
    }
    let k = coefficients(col.channel);
    let m = Item(k.x);
    var idx = col.idx;
    for (var r = col.row; r < col.end; r++) {
        y[idx] = (x[idx] - m) * k.y + k.z;
        idx += p.row_stride;
    }
}

@compute @workgroup_size(WG)
fn runs(cell: Cell) {
    let r = run_start(cell);
    if !r.valid {
        return;
    }
    let k = coefficients(r.channel);
    let m = Item(k.x);
    for (var i = r.lane; i < p.s_count; i += LANES) {
        let at = r.base + i;
        y[at] = (x[at] - m) * k.y + k.z;
    }
}
