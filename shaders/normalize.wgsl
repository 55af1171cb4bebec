// Fused normalize-scale-shift with its epilogue: y = act((x - mean) * (invstd * weight) + bias
// [+ residual]) (epilogue.wgsl; the residual is read where HAS_RESIDUAL).
//
// (x - mean) * a + b rather than torch's x * a + (b - mean * a): the same cost, and it does not
// cancel when |mean| >> std (a constant channel gives exactly `bias`).
// Computes: with batch statistics (USE_RUNNING = false) `mean` holds save_mean and `spread`
//           save_invstd; with running statistics (eval) `mean` holds running_mean and `spread`
//           running_var, and invstd = 1 / sqrt(running_var + eps). Without weight (HAS_WEIGHT
//           = false) the scale is invstd; without bias (HAS_BIAS = false) the shift is 0.
// Bindings: `NormalizeBindings` in src/ops/normalize.rs: geo (Block), chan (Channels, for eps),
//           x and y (the block's window), mean, spread, weight?, bias? (C entries each),
//           residual? (the block's window).
// Dispatch: one per block; workgroups per `WalkGeometry::workgroups`, folded into a 2-D grid.

override USE_RUNNING: bool = false;

// (mean, invstd * weight, bias, 0) of channel ch.
fn coefficients(ch: u32) -> vec4<f32> {
    var scale = select(spread[ch], 1.0 / sqrt(spread[ch] + chan.eps), USE_RUNNING);
    if HAS_WEIGHT {
        scale *= weight[ch];
    }
    var shift = 0.0;
    if HAS_BIAS {
        shift = bias[ch];
    }
    return vec4<f32>(mean[ch], scale, shift, 0.0);
}

@compute @workgroup_size(WG)
fn main(cell: Cell) {
    let s = span_start(cell.lid, cell.wid, cell.nwg);
    if s.count == 0u {
        return;
    }
    // Per channel lane of the items: their mean, scale and shift.
    let k = lane_coefficients(s.channel);
    let m = item_channel(k[0]);
    let scale = item_channel(k[1]);
    let shift = item_channel(k[2]);
    var at = s.start;
    for (var i = 0u; i < s.count; i++) {
        var z = (load_x(at) - m) * scale + shift;
        if HAS_RESIDUAL {
            z += load_residual(at);
        }
        store_y(at, activate(z));
        at += s.stride;
    }
}
