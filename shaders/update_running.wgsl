// Running-statistics update after a training forward (PyTorch semantics):
//   num_batches_tracked += 1
//   f = momentum, or 1 / num_batches_tracked (after the increment) when momentum is None
//   running_mean = f * mean + (1 - f) * running_mean
//   running_var  = f * M2 / (n - 1) + (1 - f) * running_var      (unbiased variance; M2 / n
//                  with `biased`, the ONNX / Keras convention)
// With update_stats = 0 (an empty batch) only num_batches_tracked changes, as in PyTorch.
//
// Bindings: `UpdateRunningBindings` in src/ops/update_running.rs: upd (Update), save_mean and
//           m2 (read, C entries), running_mean and running_var (read-write, C entries),
//           tracked? (num_batches_tracked as two u32 words, low then high; read-write).
// Uses:    `Update` (common.wgsl).
// Dispatch: exactly one workgroup, so that every invocation reads the old count before
//           invocation 0 replaces it (one barrier, no cross-workgroup race).

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    // Without a counter (momentum given, nothing to count) the factor is the momentum.
    var low = 1u;
    var high = 0u;
    if HAS_TRACKED {
        low = tracked[0] + 1u;
        high = tracked[1] + select(0u, 1u, low == 0u);
    }
    let batches = f32(high) * 4294967296.0 + f32(low);
    let f = select(upd.momentum, 1.0 / batches, upd.cumulative != 0u);
    storageBarrier();
    if HAS_TRACKED && lid == 0u {
        tracked[0] = low;
        tracked[1] = high;
    }
    if upd.update_stats == 0u {
        return;
    }
    let dof = running_dof(upd);
    for (var c = lid; c < upd.channels; c += WG) {
        let r = running_step(f, dof, save_mean[c], m2[c], vec2<f32>(running_mean[c], running_var[c]));
        running_mean[c] = r.x;
        running_var[c] = r.y;
    }
}
