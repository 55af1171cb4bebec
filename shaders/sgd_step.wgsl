// One step of torch.optim.SGD on a per-channel parameter (weight or bias), on the device:
//   d = grad + weight_decay * param
//   with momentum: buf = d on the first step, else momentum * buf + (1 - dampening) * d;
//                  d = d + momentum * buf (nesterov) or buf
//   param -= lr * d
// Bindings: `SgdStepBindings` in src/ops/sgd_step.rs: step (Sgd), param (read-write), grad
//           (read), all C entries; buf? (read-write, C + 1 entries; absent without momentum).
// Dispatch: one workgroup, looping over the channels.
//
// Whether this is the first step lives on the device, in buf[C] (0 until a step ran, then 1),
// not in a count kept by the host: a step recorded and never submitted must not count, or the
// next real step would skip the first-step rule (no dampening).

// Filled by `SgdParams` in src/ops/sgd_step.rs.
struct Sgd {
    channels: u32,
    _unused: u32,
    nesterov: u32,
    _pad: u32,
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    var first = false;
    if HAS_BUF {
        first = buf[step.channels] == 0.0;
    }
    // Every invocation has read the flag before invocation 0 sets it below.
    storageBarrier();
    for (var c = lid; c < step.channels; c += WG) {
        var d = grad[c];
        if step.weight_decay != 0.0 {
            d += step.weight_decay * param[c];
        }
        if HAS_BUF {
            var b = d;
            if !first {
                b = step.momentum * buf[c] + (1.0 - step.dampening) * d;
            }
            buf[c] = b;
            d = select(b, d + step.momentum * b, step.nesterov != 0u);
        }
        param[c] -= step.lr * d;
    }
    if HAS_BUF && lid == 0u {
        buf[step.channels] = 1.0;
    }
}
