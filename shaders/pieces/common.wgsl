// Shared by every batch-norm kernel: the uniform parameter types and the Welford/Chan merge.
// `src/ops/mod.rs` assembles each kernel from pieces (see `Assembly` there) and generates its
// `@binding` declarations from the kernel's bindings struct, so no shader declares bindings.
//
// Layout: the tensor is contiguous (N, C, S) with S = product of the spatial sizes. A channel's
// values are N "planes" of S contiguous values; a plane holds `plane` items (S, or S/4 when the
// kernel reads vec4).

// Invocations per workgroup, set by the host through pipeline constants.
override WG: u32 = 256u;

// One dispatch's block of the tensor (it fits one storage binding) and how the walk cuts it
// into tasks: rows [row_begin, + rows) x channels [channel_begin, + dispatch_channels) x items
// [s_begin, + s_count) of each plane; the bindings start at item `bind_base` of the tensor.
// Filled by `BlockParams` in `src/ops/plan.rs`.
struct Block {
    channels: u32,          // C of the whole tensor
    plane: u32,             // items per (n, c) plane of the whole tensor
    row_stride: u32,        // channels * plane
    row_begin: u32,
    rows: u32,
    channel_begin: u32,
    dispatch_channels: u32,
    s_begin: u32,
    s_count: u32,
    bind_base: u32,
    tasks: u32,             // tasks (partials) per channel in this block
    task_items: u32,        // planes walk: items per task (a plane segment)
    task_rows: u32,         // columns walk: rows per task
    task_offset: u32,       // this block's first partial within a channel's partials
    total_tasks: u32,       // partials per channel over all blocks
    _pad0: u32,
    recip: array<vec4<f32>, 4>, // 1 / (i + 1) for i < 16, see welford_push
}

// Per-channel totals and eps of one (shape, eps): read by the per-channel passes, and by the
// tensor passes that normalize with running statistics. Filled by `ChannelParams`.
struct Channels {
    channels: u32,
    total_tasks: u32,   // partials per channel
    count: u32,         // values per channel, N * S (exact, unlike the partials' f32 counts)
    eps: f32,
}

// The running-statistics update's parameters (update_running.wgsl, and the training forward
// that updates in its own dispatch, forward_single_update.wgsl). Filled by `UpdateParams` in
// src/ops/update_running.rs.
struct Update {
    channels: u32,
    count: u32,         // values per channel, N * S
    momentum: f32,      // running-stat factor when `cumulative` is 0
    cumulative: u32,    // 1: momentum None, factor 1 / num_batches_tracked
    update_stats: u32,  // 0: empty batch, only num_batches_tracked changes
    biased: u32,        // 1: the running variance is M2 / n
    _pad1: u32,
    _pad2: u32,
}

// The divisor of the running variance: n - 1 (PyTorch's unbiased variance), or n (`biased`).
fn running_dof(u: Update) -> f32 {
    return f32(u.count - select(1u, 0u, u.biased != 0u));
}

// One channel's running (mean, var) after a batch of mean `mean` and M2 `m2`, with factor f.
fn running_step(f: f32, dof: f32, mean: f32, m2: f32, old: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(f * mean + (1.0 - f) * old.x, f * (m2 / dof) + (1.0 - f) * old.y);
}

// Per-channel values of an item's channel lanes (kernels reading items across channels): a
// kernel gathers them as a mat4x4 with one column per channel lane (column j: lane j's values,
// as its per-channel function returns them; lanes past CHANNEL_LANES stay zero), and
// `transpose` regroups them per value, row i holding value i of every lane, which
// `item_channel` turns into an item.

// A Welford partial is vec4(count, mean, M2, 0); a zero vector is the empty partial.
// Chan et al.: merging keeps a constant channel's mean exact (delta = 0) and never forms
// E[x^2] - E[x]^2.
fn welford_merge(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    let n = a.x + b.x;
    // Both empty: n = 0, and max() keeps the ratio at 0 instead of NaN.
    let r = b.x / max(n, 1.0);
    let delta = b.y - a.y;
    let mean = a.y + delta * r;
    let m2 = a.z + b.z + delta * delta * a.x * r;
    return vec4<f32>(n, mean, m2, 0.0);
}

// Workgroups are numbered over a 2-D grid so that more than
// max_compute_workgroups_per_dimension of them can be dispatched.
fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
