// Backward, pass 3 of 3: grad_input, one fused elementwise pass.
//
// Computes: with batch statistics (USE_RUNNING = false)
//             dx = weight * invstd * (dy - sum(dy)/n - xhat * sum(dy * xhat)/n),
//             xhat = (x - mean) * invstd, sums taken from coef (backward_finalize.wgsl);
//           with running statistics (eval, USE_RUNNING = true)
//             dx = dy * weight / sqrt(running_var + eps), which needs no reduction.
//           HAS_WEIGHT = false uses weight 1 (affine = false) and never reads `weight`.
// Bindings: `BackwardInputBindings` in src/ops/backward_input.rs: geo (Block), chan (Channels,
//           for eps), x, dy (read) and dx (written), all the block's window; mean, spread
//           (save_mean / save_invstd, or running_mean / running_var), weight?, coef (vec2 per
//           channel; absent with running statistics), all C entries.
// Dispatch: one per block; workgroups per `WalkGeometry::workgroups`, folded into a 2-D grid.

override USE_RUNNING: bool = false;

// dx = dy * a.x - a.y - (x - a.z) * a.w, so that one formula serves both modes.
fn coefficients(c: u32) -> vec4<f32> {
    var gamma = 1.0;
    if HAS_WEIGHT {
        gamma = weight[c];
    }
    if USE_RUNNING || !HAS_COEF {
        return vec4<f32>(gamma / sqrt(spread[c] + chan.eps), 0.0, 0.0, 0.0);
    }
    let invstd = spread[c];
    let k = coef[c];
    let scale = gamma * invstd;
    return vec4<f32>(scale, k.x * scale, mean[c], invstd * k.y * scale);
}

@compute @workgroup_size(WG)
fn main(cell: Cell) {
    let s = span_start(cell.lid, cell.wid, cell.nwg);
    if s.count == 0u {
        return;
    }
    // Per channel lane of the items: the four coefficients.
    let k = lane_coefficients(s.channel);
    let a = item_channel(k[0]);
    let b = item_channel(k[1]);
    let m = item_channel(k[2]);
    let d = item_channel(k[3]);
    var at = s.start;
    for (var i = 0u; i < s.count; i++) {
        // USE_RUNNING is a pipeline constant: the untaken branch is compiled away, and eval
        // mode never reads x.
        if USE_RUNNING {
            store_dx(at, load_dy(at) * a);
        } else {
            store_dx(at, load_dy(at) * a - b - (load_x(at) - m) * d);
        }
        at += s.stride;
    }
}
