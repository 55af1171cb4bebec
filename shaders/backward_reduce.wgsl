// Backward, pass 1 of 3: partial sums for the parameter gradients.
//
// Computes: per task of the walk (walk.wgsl), vec4(sum(dz), sum(dz * (x - mean)), 0, 0)
//           with dz = dy * act'(z) through the forward's epilogue (epilogue.wgsl), rebuilding
//           its pre-activation z = (x - mean) * affine.x + affine.y [+ residual] where
//           HAS_AFFINE (else dz = dy); dz is written where HAS_DZ (it is grad_residual, and
//           backward_input's gradient). Partials are added in a fixed tree order, so results do
//           not depend on scheduling.
// Statistics: `mean` holds save_mean (batch statistics) or running_mean (eval mode).
// Bindings: `BackwardReduceBindings` in src/ops/backward_reduce.rs: geo (Block), x and dy (the
//           block's window), mean (C entries), partials (C * total_tasks entries, written),
//           affine? (vec2 per channel, from channel_affine.wgsl), residual? (read) and dz?
//           (written), the block's window.
// Dispatch: one per block; workgroups per `WalkGeometry::workgroups`, folded into a 2-D grid.

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return a + b;
}

@compute @workgroup_size(WG)
fn main(inv: Invocation, grid: Grid) {
    let s = span_start(inv.lid, grid.wid, grid.nwg);
    // Per channel lane of the items: the mean, and the normalize's (scale, shift) (see
    // common.wgsl).
    var lanes: mat4x4<f32>;
    for (var j = 0u; j < CHANNEL_LANES; j++) {
        let ch = s.channel * CHANNEL_LANES + j;
        var a = vec2<f32>(0.0);
        if HAS_AFFINE {
            a = affine[ch];
        }
        lanes[j] = vec4<f32>(mean[ch], a, 0.0);
    }
    let k = transpose(lanes);
    let m = item_channel(k[0]);
    let scale = item_channel(k[1]);
    let shift = item_channel(k[2]);
    var sum_dy = Item(0.0);
    var sum_dy_xmu = Item(0.0);
    var at = s.start;
    for (var k = 0u; k < s.count; k++) {
        var g = load_dy(at);
        let xm = load_x(at) - m;
        if HAS_AFFINE {
            var z = xm * scale + shift;
            if HAS_RESIDUAL {
                z += load_residual(at);
            }
            g = activate_grad(z, g);
        }
        if HAS_DZ {
            store_dz(at, g);
        }
        sum_dy += g;
        sum_dy_xmu += g * xm;
        at += s.stride;
    }
    for (var j = 0u; j < CHANNEL_LANES; j++) {
        if j > 0u && WALK != WALK_COLUMNS {
            // The previous lane's reduction must be read before scratch is written again (the
            // columns walk, the one for items across channels, reduces nothing across
            // invocations: no barrier there).
            workgroupBarrier();
        }
        let sums = vec4<f32>(item_channel_sum(sum_dy, j), item_channel_sum(sum_dy_xmu, j), 0.0, 0.0);
        let total = reduce_span(sums, s, inv, grid);
        if s.owner {
            partials[lane_slot(s, j)] = total;
        }
    }
}
