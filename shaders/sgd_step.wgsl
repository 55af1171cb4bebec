// One step of torch.optim.SGD on a per-channel parameter (weight or bias), on the device:
//   d = grad + weight_decay * param
//   with momentum: buf = d on the first step, else momentum * buf + (1 - dampening) * d;
//                  d = d + momentum * buf (nesterov) or buf
//   param -= lr * d
// Bindings: `SgdStepBindings` in src/ops/sgd_step.rs: step (Sgd), param (read-write), grad
//           (read), buf? (read-write; absent without momentum); all C entries.
// Dispatch: one workgroup, looping over the channels.

// Filled by `SgdParams` in src/ops/sgd_step.rs.
struct Sgd {
    channels: u32,
    first: u32,     // 1 on the first step: the momentum buffer starts as d
    nesterov: u32,
    _pad: u32,
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    for (var c = lid; c < step.channels; c += WG) {
        var d = grad[c];
        if step.weight_decay != 0.0 {
            d += step.weight_decay * param[c];
        }
        if HAS_BUF {
            var b = d;
            if step.first == 0u {
                b = step.momentum * buf[c] + (1.0 - step.dampening) * d;
            }
            buf[c] = b;
            d = select(b, d + step.momentum * b, step.nesterov != 0u);
        }
        param[c] -= step.lr * d;
    }
}
