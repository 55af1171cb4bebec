// Shared by every batch-norm kernel: the per-dispatch parameters, the Welford/Chan merge, and
// the two ways a tensor pass walks its data. Prepended to each kernel by `src/kernels/mod.rs`,
// together with one of `item_vec4.wgsl` / `item_scalar.wgsl` and, for kernels that reduce, one of
// `reduce_subgroup.wgsl` / `reduce_workgroup.wgsl`.
//
// Layout: the tensor is contiguous (N, C, S) with S = product of the spatial sizes. A channel's
// values are N "planes" of S contiguous values; a plane holds `plane` items (S, or S/4 when the
// kernel reads vec4). One dispatch covers a block of the tensor that fits one storage binding:
// rows [row_begin, row_begin + rows) x channels [channel_begin, + dispatch_channels) x items
// [s_begin, s_begin + s_count) of each plane; the bindings start at item `bind_base` of the
// tensor. Small tensors are one block.
//
// Three walks, chosen by the host per shape:
// - planes (entry point `planes`): a workgroup works on one segment of one plane (so inside one
//   channel, with no per-element division), each invocation on K items;
// - runs (entry point `runs`, for planes shorter than a workgroup): LANES invocations per plane;
// - columns (entry point `columns`, for planes of a few items): an invocation owns one item column
//   (channel, item within the plane) and walks down `rows_per_task` rows; loads of neighbouring
//   invocations are contiguous, and the channel is found with one division per invocation.

// Invocations per workgroup, set by the host through pipeline constants.
override WG: u32 = 256u;

struct Params {
    channels: u32,          // C of the whole tensor
    plane: u32,             // items per (n, c) plane of the whole tensor
    row_stride: u32,        // channels * plane
    row_begin: u32,         // this block's first row (batch index)
    rows: u32,              // rows in this block
    channel_begin: u32,     // this block's first channel
    dispatch_channels: u32, // channels in this block
    s_begin: u32,           // first item of each plane in this block
    s_count: u32,           // items of each plane in this block
    bind_base: u32,         // tensor item index where the bindings start
    tasks: u32,             // tasks (partials) per channel in this block
    chunk: u32,             // planes walk: items per task; columns walk: rows per task
    task_offset: u32,       // this block's first partial within a channel's partials
    total_tasks: u32,       // partials per channel over all blocks
    count: u32,             // values per channel in the whole tensor, N * S
    eps: f32,
    momentum: f32,          // running-stat factor when `cumulative` is 0
    cumulative: u32,        // 1: momentum None, factor 1 / num_batches_tracked
    update_stats: u32,      // 0: empty batch, only num_batches_tracked changes
    _pad0: u32,
    recip: array<vec4<f32>, 4>, // 1 / (i + 1) for i < 16, see welford_push
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

// Merges the item partial `b` into a run partial `a` that already holds `step` items of the
// same count: the ratio n_b / n is then 1 / (step + 1), looked up in the params instead of
// divided per item (the division dominated the statistics pass on CPU adapters).
fn welford_push(a: vec4<f32>, b: vec4<f32>, step: u32) -> vec4<f32> {
    let r = p.recip[step >> 2u][step & 3u];
    let delta = b.y - a.y;
    return vec4<f32>(a.x + b.x, a.y + delta * r, a.z + b.z + delta * delta * a.x * r, 0.0);
}

// Where an invocation sits: the builtins every walk's entry point takes (the `planes` entry
// points take the reduction piece's `Invocation`, which adds subgroup builtins).
struct Cell {
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
}

// Workgroups are numbered over a 2-D grid so that more than
// max_compute_workgroups_per_dimension of them can be dispatched.
fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// ---- planes walk ---------------------------------------------------------------------------
//
// Tasks are plane segments of `chunk` = WG * K items, numbered in memory order (segment, then
// channel, then row), so consecutive workgroups read consecutive memory. Inside a segment, runs
// of LANES consecutive invocations share K runs of LANES consecutive items: every run of
// invocations reads one contiguous stream (a CPU adapter's SIMD lane group) while neighbouring
// invocations still touch neighbouring items (a GPU's coalescing).

const LANES: u32 = 8u;

struct Walk {
    channel: u32,   // global channel
    slot: u32,      // partial index of this task
    base: u32,      // index into the bound arrays of the segment's first item
    first: u32,     // this invocation's first item within the segment
    len: u32,       // items in the segment
    steps: u32,     // K
}

fn walk_start(task: u32, lid: u32) -> Walk {
    var w: Walk;
    let segments = (p.s_count + p.chunk - 1u) / p.chunk;
    let rest = task / segments;
    let segment = task - rest * segments;
    let n = rest / p.dispatch_channels;
    w.channel = p.channel_begin + (rest - n * p.dispatch_channels);
    w.slot = w.channel * p.total_tasks + p.task_offset + n * segments + segment;
    let begin = segment * p.chunk;
    w.len = min(p.chunk, p.s_count - begin);
    w.base = (p.row_begin + n) * p.row_stride + w.channel * p.plane + p.s_begin + begin - p.bind_base;
    w.steps = p.chunk / WG;
    let run = lid / LANES;
    w.first = run * LANES * w.steps + (lid - run * LANES);
    return w;
}

// ---- runs walk ------------------------------------------------------------------------------
//
// For planes shorter than a workgroup: each run of LANES consecutive invocations owns one whole
// plane and steps through it LANES items at a time; a workgroup covers WG / LANES consecutive
// planes, in memory order. One partial per plane.

struct Run {
    valid: bool,
    channel: u32,   // global channel
    slot: u32,      // partial index of this plane
    base: u32,      // index into the bound arrays of the plane's first item
    lane: u32,      // position within the run
}

fn run_start(cell: Cell) -> Run {
    var r: Run;
    let wg = linear_workgroup(cell.wid, cell.nwg);
    let lid = cell.lid;
    let index = wg * (WG / LANES) + lid / LANES;
    r.valid = index < p.rows * p.dispatch_channels;
    let n = index / p.dispatch_channels;
    r.channel = p.channel_begin + (index - n * p.dispatch_channels);
    r.slot = r.channel * p.total_tasks + p.task_offset + n;
    r.base = (p.row_begin + n) * p.row_stride + r.channel * p.plane + p.s_begin - p.bind_base;
    r.lane = lid % LANES;
    return r;
}

// ---- columns walk --------------------------------------------------------------------------

struct Column {
    valid: bool,
    channel: u32,   // global channel
    slot: u32,      // partial index of this (column, row block)
    row: u32,       // first row of the task, within the block
    end: u32,       // one past the task's last row, within the block
    idx: u32,       // index into the bound arrays of (row, column)
}

// Workgroup grid: x over ceil(dispatch_channels * s_count / WG) column groups, then row blocks
// (folded into a 2-D grid like every other dispatch).
fn column_start(cell: Cell) -> Column {
    var col: Column;
    let wg = linear_workgroup(cell.wid, cell.nwg);
    let lid = cell.lid;
    let groups = (p.dispatch_channels * p.s_count + WG - 1u) / WG;
    let block = wg / groups;
    let j = (wg - block * groups) * WG + lid;
    col.valid = j < p.dispatch_channels * p.s_count && block < p.tasks / p.s_count;
    let local = j / p.s_count;
    let s = j - local * p.s_count;
    col.channel = p.channel_begin + local;
    col.slot = col.channel * p.total_tasks + p.task_offset + block * p.s_count + s;
    col.row = block * p.chunk;
    col.end = min(col.row + p.chunk, p.rows);
    col.idx = (p.row_begin + col.row) * p.row_stride + col.channel * p.plane + p.s_begin + s - p.bind_base;
    return col;
}
