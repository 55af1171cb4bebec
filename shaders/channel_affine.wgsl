// Per-channel affine coefficients of the normalize pass, for the passes that need them without
// recomputing them per element: z = (x - mean) * scale + shift, with scale = invstd * weight
// and shift = bias. Used by the backward through an activation (`affine`, so that
// backward_reduce can rebuild the pre-activation z), and by the eval fold (`fold_scale` =
// scale, `fold_shift` = bias - mean * scale, like torch.nn.utils.fusion.fuse_conv_bn_weights).
//
// Statistics: `mean` and `spread` hold save_mean / save_invstd (USE_RUNNING = false) or
//           running_mean / running_var (USE_RUNNING = true, invstd = 1 / sqrt(var + eps)).
// Bindings: `ChannelAffineBindings` in src/ops/channel_affine.rs: chan (Channels), mean,
//           spread, weight?, bias? (read), affine? (vec2 per channel), fold_scale?,
//           fold_shift? (written); all C entries.
// Dispatch: one workgroup, looping over the channels (a per-channel map; C is small next to
//           any tensor pass).

override USE_RUNNING: bool = false;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    for (var c = lid; c < chan.channels; c += WG) {
        let invstd = select(spread[c], 1.0 / sqrt(spread[c] + chan.eps), USE_RUNNING);
        var scale = invstd;
        if HAS_WEIGHT {
            scale *= weight[c];
        }
        var shift = 0.0;
        if HAS_BIAS {
            shift = bias[c];
        }
        if HAS_AFFINE {
            affine[c] = vec2<f32>(scale, shift);
        }
        if HAS_FOLD_SCALE {
            fold_scale[c] = scale;
        }
        if HAS_FOLD_SHIFT {
            fold_shift[c] = shift - mean[c] * scale;
        }
    }
}
