// Shared by every batch-norm kernel: the per-shape parameters, the Welford/Chan merge, and the
// walk over one channel's values. Prepended to each kernel by `src/kernels/mod.rs`, together
// with one of `item_vec4.wgsl` / `item_scalar.wgsl` and one of `reduce_subgroup.wgsl` /
// `reduce_workgroup.wgsl`.
//
// Layout: the tensor is contiguous (N, C, S) with S = product of the spatial sizes. A channel's
// values are N "planes" of S contiguous values; one plane holds `plane` items (S, or S/4 when the
// kernel reads vec4). Every workgroup works inside one channel, so the channel is known per
// workgroup and no per-element division is needed: each invocation walks its items by adding a
// precomputed (planes, items) step and carrying once.

// Invocations per workgroup, set by the host through pipeline constants.
override WG: u32 = 256u;

struct Params {
    channels: u32,      // C
    plane: u32,         // items per (n, c) plane
    batch: u32,         // N
    tasks: u32,         // workgroups per channel
    chunk: u32,         // items per workgroup (a multiple of WG)
    step_planes: u32,   // WG / plane
    step_items: u32,    // WG % plane
    count: u32,         // values per channel, N * S
    eps: f32,
    momentum: f32,      // running-stat factor when `cumulative` is 0
    cumulative: u32,    // 1: momentum None, factor 1 / num_batches_tracked
    update_stats: u32,  // 0: empty batch, only num_batches_tracked changes
}

@group(0) @binding(0) var<uniform> p: Params;

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

// Where one workgroup's walk over a channel starts: the task's item range and the invocation's
// first (plane, offset) position. One division per invocation, none per element.
struct Walk {
    channel: u32,
    k: u32,
    end: u32,
    n: u32,
    s: u32,
}

fn walk_start(task: u32, lid: u32) -> Walk {
    var w: Walk;
    w.channel = task / p.tasks;
    let t = task - w.channel * p.tasks;
    let begin = t * p.chunk;
    w.end = min(begin + p.chunk, p.batch * p.plane);
    w.k = begin + lid;
    w.n = w.k / p.plane;
    w.s = w.k - w.n * p.plane;
    return w;
}

fn walk_index(w: Walk) -> u32 {
    return (w.n * p.channels + w.channel) * p.plane + w.s;
}

fn walk_next(w: ptr<function, Walk>) {
    (*w).k += WG;
    (*w).s += p.step_items;
    (*w).n += p.step_planes;
    if (*w).s >= p.plane {
        (*w).s -= p.plane;
        (*w).n += 1u;
    }
}

// Workgroups are numbered over a 2-D grid so that more than
// max_compute_workgroups_per_dimension of them can be dispatched.
fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
