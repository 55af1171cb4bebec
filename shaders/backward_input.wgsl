// Backward, pass 3 of 3: grad_input, one fused elementwise pass.
//
// Computes: with batch statistics (USE_RUNNING = false)
//             dx = weight * invstd * (dy - sum(dy)/n - xhat * sum(dy * xhat)/n),
//             xhat = (x - mean) * invstd, sums taken from coef (backward_finalize.wgsl);
//           with running statistics (eval, USE_RUNNING = true)
//             dx = dy * weight / sqrt(running_var + eps), which needs no reduction.
//           HAS_WEIGHT = false uses weight 1 (affine = false) and never reads `weight`.
// Bindings: 0 params (uniform), 1 x, 2 dy: array<Item> (read), 3 dx: array<Item> (write), all
//           the block's window; 4 mean, 5 spread (save_mean / save_invstd, or running_mean /
//           running_var), 6 weight: array<f32> (read, C entries), 7 coef: array<vec2<f32>>
//           (read, C entries).
// Dispatch: as stats.wgsl, entry points `planes`, `runs` and `columns`.

@group(0) @binding(1) var<storage, read> x: array<Item>;
@group(0) @binding(2) var<storage, read> dy: array<Item>;
@group(0) @binding(3) var<storage, read_write> dx: array<Item>;
@group(0) @binding(4) var<storage, read> mean: array<f32>;
@group(0) @binding(5) var<storage, read> spread: array<f32>;
@group(0) @binding(6) var<storage, read> weight: array<f32>;
@group(0) @binding(7) var<storage, read> coef: array<vec2<f32>>;

override USE_RUNNING: bool = false;
override HAS_WEIGHT: bool = true;

// dx = dy * a.x - a.y - (x - a.z) * a.w, so that one formula serves both modes.
fn coefficients(c: u32) -> vec4<f32> {
    var gamma = 1.0;
    if HAS_WEIGHT {
        gamma = weight[c];
    }
    if USE_RUNNING {
        return vec4<f32>(gamma / sqrt(spread[c] + p.eps), 0.0, 0.0, 0.0);
    }
    let invstd = spread[c];
    let k = coef[c];
    let scale = gamma * invstd;
    return vec4<f32>(scale, k.x * scale, mean[c], invstd * k.y * scale);
}

@compute @workgroup_size(WG)
fn planes(cell: Cell) {
    let task = linear_workgroup(cell.wid, cell.nwg);
    if task >= p.dispatch_channels * p.tasks {
        return;
    }
    let w = walk_start(task, cell.lid);
    let a = coefficients(w.channel);
    let m = Item(a.z);
    for (var i = w.first; i < min(w.len, w.first + w.steps * LANES); i += LANES) {
        let at = w.base + i;
        // USE_RUNNING is a pipeline constant: the untaken branch is compiled away, and eval
        // mode never reads x.
        if USE_RUNNING {
            dx[at] = dy[at] * a.x;
        } else {
            dx[at] = dy[at] * a.x - a.y - (x[at] - m) * a.w;
        }
    }
}

@compute @workgroup_size(WG)
fn columns(cell: Cell) {
    let col = column_start(cell);
    if !col.valid {
        return;
    }
    let a = coefficients(col.channel);
    let m = Item(a.z);
    var idx = col.idx;
    for (var r = col.row; r < col.end; r++) {
        if USE_RUNNING {
            dx[idx] = dy[idx] * a.x;
        } else {
            dx[idx] = dy[idx] * a.x - a.y - (x[idx] - m) * a.w;
        }
        idx += p.row_stride;
    }
}

@compute @workgroup_size(WG)
fn runs(cell: Cell) {
    let r = run_start(cell);
    if !r.valid {
        return;
    }
    let a = coefficients(r.channel);
    let m = Item(a.z);
    for (var i = r.lane; i < p.s_count; i += LANES) {
        let at = r.base + i;
        if USE_RUNNING {
            dx[at] = dy[at] * a.x;
        } else {
            dx[at] = dy[at] * a.x - a.y - (x[at] - m) * a.w;
        }
    }
}
