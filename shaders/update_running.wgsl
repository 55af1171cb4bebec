// Running-statistics update after a training forward (PyTorch semantics):
//   num_batches_tracked += 1
//   f = momentum, or 1 / num_batches_tracked (after the increment) when momentum is None
//   running_mean = f * mean + (1 - f) * running_mean
//   running_var  = f * M2 / (n - 1) + (1 - f) * running_var      (unbiased variance)
// With update_stats = 0 (an empty batch) only num_batches_tracked changes, as in PyTorch.
//
// Bindings: 0 params (uniform), 1 save_mean, 2 m2: array<f32> (read, C entries),
//           3 running_mean, 4 running_var: array<f32> (read-write, C entries),
//           5 tracked: num_batches_tracked as two u32 words (low, high) (read-write).
// Dispatch: exactly one workgroup, so that every invocation reads the old count before
//           invocation 0 replaces it (one barrier, no cross-workgroup race).

@group(0) @binding(1) var<storage, read> save_mean: array<f32>;
@group(0) @binding(2) var<storage, read> m2: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(5) var<storage, read_write> tracked: array<u32, 2>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    let low = tracked[0] + 1u;
    let high = tracked[1] + select(0u, 1u, low == 0u);
    let batches = f32(high) * 4294967296.0 + f32(low);
    let f = select(p.momentum, 1.0 / batches, p.cumulative != 0u);
    storageBarrier();
    if lid == 0u {
        tracked[0] = low;
        tracked[1] = high;
    }
    if p.update_stats == 0u {
        return;
    }
    let dof = f32(p.count - 1u);
    for (var c = lid; c < p.channels; c += WG) {
        running_mean[c] = f * save_mean[c] + (1.0 - f) * running_mean[c];
        running_var[c] = f * (m2[c] / dof) + (1.0 - f) * running_var[c];
    }
}
