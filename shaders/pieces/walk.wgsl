// The walks: which items of the block each invocation visits, as one index sequence
// `start, start + stride, ...` (`count` items), so every tensor kernel has one loop body and a
// new walk is added here once for all of them. WALK is a pipeline constant chosen per shape by
// `WalkGeometry` in `src/ops/plan.rs`.
//
// - planes: a workgroup works on one segment of `task_items` items of one plane (so inside one
//   channel, with no per-element division). Segments are numbered in memory order (segment,
//   then channel, then row), so consecutive workgroups read consecutive memory. Inside a
//   segment, runs of LANES consecutive invocations share runs of LANES consecutive items: every
//   run of invocations reads one contiguous stream (a CPU adapter's SIMD lane group) while
//   neighbouring invocations still touch neighbouring items (a GPU's coalescing).
// - runs (planes shorter than a workgroup): LANES consecutive invocations own one whole plane
//   and step through it LANES items at a time; a workgroup covers WG / LANES planes in memory
//   order. One task per plane.
// - columns (planes of a few items): an invocation owns one item column (channel, item within
//   the plane) and walks down `task_rows` rows; loads of neighbouring invocations are
//   contiguous, and the channel is found with one division per invocation. One task per
//   invocation.

const WALK_PLANES: u32 = 0u;
const WALK_RUNS: u32 = 1u;
const WALK_COLUMNS: u32 = 2u;
override WALK: u32 = WALK_PLANES;

// Invocations per run: the device profile's run width (src/profile.rs), 8 (lavapipe's SIMD
// width) on the CPU profile, the subgroup width or 32 on the GPU profile. It divides WG.
override LANES: u32 = 8u;

// Where an invocation sits (kernels that reduce take the reduction piece's `Invocation`, which
// adds subgroup builtins where the adapter has them).
struct Cell {
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
}

struct Span {
    channel: u32,   // global channel of every item in the span
    slot: u32,      // index of the task's partial: channel * total_tasks + ...
    start: u32,     // index into the bound arrays of the first item
    stride: u32,    // distance between consecutive items
    count: u32,     // items; 0 for idle invocations
    owner: bool,    // whether this invocation writes the task's partial (see reduce_span)
}

// The partial slot of channel lane j of the span's items (`s.slot` for items of one channel):
// lane j of item channel c is channel c * CHANNEL_LANES + j.
fn lane_slot(s: Span, j: u32) -> u32 {
    return s.slot + (s.channel * (CHANNEL_LANES - 1u) + j) * geo.total_tasks;
}

fn span_start(lid: u32, wid: vec3<u32>, nwg: vec3<u32>) -> Span {
    var s: Span;
    let g = linear_workgroup(wid, nwg);
    if WALK == WALK_PLANES {
        let segments = (geo.s_count + geo.task_items - 1u) / geo.task_items;
        let valid = g < geo.dispatch_channels * geo.tasks;
        let task = select(0u, g, valid);
        let rest = task / segments;
        let segment = task - rest * segments;
        let n = rest / geo.dispatch_channels;
        s.channel = geo.channel_begin + (rest - n * geo.dispatch_channels);
        s.slot = s.channel * geo.total_tasks + geo.task_offset + n * segments + segment;
        let begin = segment * geo.task_items;
        // A block may have more tasks per channel than segments (the shorter last piece of a
        // plane larger than a binding): the spare tasks (n >= rows) get no items and write
        // empty partials into their own slots.
        let len = select(0u, min(geo.task_items, geo.s_count - begin), n < geo.rows);
        let steps = geo.task_items / WG;
        let run = lid / LANES;
        let first = run * LANES * steps + (lid - run * LANES);
        s.start = (geo.row_begin + n) * geo.row_stride + s.channel * geo.plane + geo.s_begin + begin + first - geo.bind_base;
        s.stride = LANES;
        s.count = select(0u, min(steps, (len - first + LANES - 1u) / LANES), valid && first < len);
        s.owner = valid && lid == 0u;
    } else if WALK == WALK_RUNS {
        let index = g * (WG / LANES) + lid / LANES;
        let valid = index < geo.rows * geo.dispatch_channels;
        let n = index / geo.dispatch_channels;
        let lane = lid % LANES;
        s.channel = geo.channel_begin + select(0u, index - n * geo.dispatch_channels, valid);
        s.slot = s.channel * geo.total_tasks + geo.task_offset + n;
        s.start = (geo.row_begin + n) * geo.row_stride + s.channel * geo.plane + geo.s_begin + lane - geo.bind_base;
        s.stride = LANES;
        s.count = select(0u, (geo.s_count - lane + LANES - 1u) / LANES, valid && lane < geo.s_count);
        s.owner = valid && lane == 0u;
    } else {
        // Invocations in order over (row block, column) pairs, columns fastest: a workgroup
        // covers several row blocks when a row has fewer columns than it has invocations (a
        // channels-last tensor with few channels), so none sits idle.
        let columns = geo.dispatch_channels * geo.s_count;
        let j = g * WG + lid;
        let block = j / columns;
        let valid = block < geo.tasks / geo.s_count;
        let column = j - block * columns;
        let local = select(0u, column / geo.s_count, valid);
        let item = column - local * geo.s_count;
        s.channel = geo.channel_begin + local;
        s.slot = s.channel * geo.total_tasks + geo.task_offset + block * geo.s_count + item;
        let row = block * geo.task_rows;
        s.start = (geo.row_begin + row) * geo.row_stride + s.channel * geo.plane + geo.s_begin + item - geo.bind_base;
        s.stride = geo.row_stride;
        s.count = select(0u, min(geo.task_rows, geo.rows - row), valid);
        s.owner = valid;
    }
    return s;
}
