// backward_single.wgsl's ending through the epilogue y = act(z), z = (x - mean) * scale +
// shift [+ residual] (the kernel `backward_single_epilogue`): dz = dy * act'(z) with z rebuilt
// per value, as backward_reduce.wgsl rebuilds it from channel_affine.wgsl's coefficients (scale
// = invstd * weight, shift = bias: the same f32 operations, so the same masks); dz is written
// as grad_residual where it is bound. Needs 11 storage buffers per stage; devices with fewer
// (WebGPU's default is 8) keep the multi-pass backward.
//
// Bindings (besides backward_single.wgsl's): bias? (C entries), residual? (like x, read; bound
//           only where the activation needs z), grad_residual? (like x, written).

// The normalize's (scale, shift) per channel lane of an item.
struct Pre {
    scale: Item,
    shift: Item,
}

fn pre_of(c: u32) -> Pre {
    var lanes: mat4x4<f32>;
    for (var j = 0u; j < CHANNEL_LANES; j++) {
        let ch = c * CHANNEL_LANES + j;
        var scale = spread[ch];
        if HAS_WEIGHT {
            scale *= weight[ch];
        }
        var shift = 0.0;
        if HAS_BIAS {
            shift = bias[ch];
        }
        lanes[j] = vec4<f32>(scale, shift, 0.0, 0.0);
    }
    let k = transpose(lanes);
    return Pre(item_channel(k[0]), item_channel(k[1]));
}

fn grad_z(i: u32, xm: Item, p: Pre) -> Item {
    var z = xm * p.scale + p.shift;
    if HAS_RESIDUAL {
        z += load_residual(i);
    }
    return activate_grad(z, load_dy(i));
}

fn keep_dz(i: u32, g: Item) {
    if HAS_GRAD_RESIDUAL {
        store_grad_residual(i, g);
    }
}
