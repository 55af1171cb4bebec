//! How a tensor pass is cut up, in three independent parts:
//!
//! 1. [`Windows`]: blocks of the tensor that each fit one storage binding (whole rows, whole
//!    planes or plane pieces). Knows nothing about walks.
//! 2. [`WalkGeometry`]: which walk (`shaders/pieces/walk.wgsl`) serves the shape, its workgroup size
//!    and task size, how many tasks (partials) a region has and how many workgroups cover it.
//! 3. [`BlockParams`]: the per-dispatch uniform that tells a kernel its block and walk.
//!
//! [`Plan`] puts them together. Hyperparameters (eps, momentum) are not part of a plan: they
//! live in [`super::ChannelParams`] and [`super::update_running::UpdateParams`].

use super::{ItemWidth, Walk};
use crate::profile::DeviceProfile;
use crate::profile::{KernelLimits, Target};
use crate::tensor::DType;

/// The length of the reciprocal table (`BlockParams::recip`): no invocation pushes more items
/// than this into one Welford partial (keeps partial counts exact and the ratios looked up).
const MAX_STEPS: u64 = 16;
/// Columns walk: rows per invocation (at most MAX_STEPS).
const MAX_ROWS_PER_TASK: u64 = MAX_STEPS;

/// Items one invocation may take in a pass over `items` items of `values_per_item` values:
/// MAX_STEPS, or fewer where the profile's floor of invocations needs more of them.
fn steps_for(items: u64, values_per_item: u64, profile: &DeviceProfile) -> u64 {
    let floor = profile.invocation_floor(items * values_per_item);
    if floor == 0 {
        return MAX_STEPS;
    }
    (items / floor).clamp(1, MAX_STEPS)
}

// ---- 1. binding windows ---------------------------------------------------------------------

/// How the tensor is cut into binding windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WindowKind {
    /// The whole tensor fits one binding: one region, bound from its start.
    Whole,
    /// Blocks of whole rows (every channel).
    Rows,
    /// A row is larger than a binding: blocks of whole planes within one row.
    Planes,
    /// A plane is larger than a binding: pieces of one plane.
    Pieces,
}

/// A box of the (N, C, plane) tensor: rows x channels x items of each plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Region {
    pub row_begin: u64,
    pub rows: u64,
    pub channel_begin: u64,
    pub channels: u64,
    pub s_begin: u64,
    pub s_count: u64,
}

/// The tensor's binding windows, in memory order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Windows {
    pub kind: WindowKind,
    pub regions: Vec<Region>,
    /// Items one window holds at most.
    pub window_items: u64,
}

impl Windows {
    /// Windows of an (n, c, plane) tensor of `item_bytes` items; windows of whole rows hold a
    /// multiple of `row_quantum` rows where they hold that many (see `column_task_rows`).
    pub fn new(
        n: u64,
        c: u64,
        plane: u64,
        item_bytes: u64,
        row_quantum: u64,
        limits: &KernelLimits,
    ) -> Windows {
        // A window may start up to `align` bytes before its first item.
        let window_items = (limits.max_binding.saturating_sub(limits.align) / item_bytes).max(1);
        let row_items = c * plane;
        let full = |row_begin, rows, channel_begin, channels| Region {
            row_begin,
            rows,
            channel_begin,
            channels,
            s_begin: 0,
            s_count: plane,
        };
        let mut regions = Vec::new();
        let kind = if n * row_items * item_bytes <= limits.max_binding {
            regions.push(full(0, n, 0, c));
            WindowKind::Whole
        } else if row_items <= window_items {
            let per = (window_items / row_items).max(1);
            let per = if per >= row_quantum {
                per / row_quantum * row_quantum
            } else {
                per
            };
            let mut row = 0;
            while row < n {
                let rows = per.min(n - row);
                regions.push(full(row, rows, 0, c));
                row += rows;
            }
            WindowKind::Rows
        } else if plane <= window_items {
            let per = (window_items / plane).max(1);
            for row in 0..n {
                let mut ch = 0;
                while ch < c {
                    let channels = per.min(c - ch);
                    regions.push(full(row, 1, ch, channels));
                    ch += channels;
                }
            }
            WindowKind::Planes
        } else {
            let pieces = plane.div_ceil(window_items);
            for row in 0..n {
                for ch in 0..c {
                    for piece in 0..pieces {
                        let s_begin = piece * window_items;
                        regions.push(Region {
                            s_begin,
                            s_count: window_items.min(plane - s_begin),
                            ..full(row, 1, ch, 1)
                        });
                    }
                }
            }
            WindowKind::Pieces
        };
        Windows {
            kind,
            regions,
            window_items,
        }
    }
}

/// Rows per task of the columns walk, for rows of `row_values` values: `max_rows` (at most
/// MAX_ROWS_PER_TASK), or fewer (a power of two) where that many rows do not fit one window.
///
/// As many as a partial's reciprocal table allows on the CPU profile: sizing tasks for 32768
/// invocations instead (down to one row each) cost lavapipe 1.5-2x on (N, C) tensors, where an
/// invocation's setup (its channels' coefficients, its partials) is paid per task: (1024, 32)
/// training forward 4.67 copies against 2.58, (512, 100) 5.78 against 3.16, (64, 256, 2, 2)
/// 2.19 against 1.89. The GPU profile passes fewer, for its floor of invocations.
///
/// Counted in f32 bytes whatever the dtype, and windows of whole rows hold a multiple of it, so
/// that an f16 tensor and its f32 twin cut their rows into the same tasks: the same partials,
/// merged in the same order, give the same statistics bit for bit.
fn column_task_rows(row_values: u64, max_rows: u64, limits: &KernelLimits) -> u64 {
    let fit = limits.max_binding.saturating_sub(limits.align) / (row_values * 4).max(1);
    let mut rows = max_rows.clamp(1, MAX_ROWS_PER_TASK).next_power_of_two();
    while rows > 1 && (rows > fit || rows > max_rows) {
        rows /= 2;
    }
    rows
}

// ---- 2. the walk -----------------------------------------------------------------------------

/// The walk serving a shape and its sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WalkGeometry {
    pub walk: Walk,
    /// Invocations per workgroup.
    pub wg: u64,
    /// Invocations per run (`LANES` in walk.wgsl, the profile's run width).
    pub lanes: u64,
    /// Planes walk: items per task (a plane segment, a multiple of `wg`).
    pub task_items: u64,
    /// Columns walk: rows per task.
    pub task_rows: u64,
}

impl WalkGeometry {
    /// The walks that can serve planes of `plane` items cut into `windows`, with runs of
    /// `lanes` and at most `steps` items per invocation: the planes walk always; the runs walk
    /// while a run's steps fit `steps`; the columns walk unless planes are cut into pieces.
    pub fn can_serve(walk: Walk, plane: u64, windows: &Windows, lanes: u64, steps: u64) -> bool {
        match walk {
            Walk::Planes => true,
            Walk::Runs => plane <= steps * lanes && windows.kind != WindowKind::Pieces,
            Walk::Columns => windows.kind != WindowKind::Pieces,
        }
    }

    /// The walk for n rows of planes of `plane` items: the profile's for the plane length, or
    /// `force` where it can serve the shape; no invocation takes more than `steps` items.
    pub fn choose(
        (n, plane): (u64, u64),
        (steps, task_rows): (u64, u64),
        windows: &Windows,
        profile: &DeviceProfile,
        force: Option<Walk>,
    ) -> Self {
        let lanes = u64::from(profile.run_width);
        let wg_tensor = u64::from(profile.tensor_workgroup_size);
        let preferred = if plane >= u64::from(profile.runs_below) {
            Walk::Planes
        } else if plane >= u64::from(profile.columns_below) {
            Walk::Runs
        } else {
            Walk::Columns
        };
        // Forced walks keep the reciprocal table's bound, not the profile's floor.
        let can = |w: Walk| {
            let limit = if Some(w) == force { MAX_STEPS } else { steps };
            Self::can_serve(w, plane, windows, lanes, limit)
        };
        let walk = [force, Some(preferred)]
            .into_iter()
            .flatten()
            .find(|&w| can(w))
            .unwrap_or(Walk::Planes);
        match walk {
            Walk::Planes => {
                // As few segments per plane as `steps` allows, each just long enough to cover
                // the plane; the workgroup size that leaves the fewest invocations idle (the
                // largest within 5% of the best).
                let chunk = |wg: u64| {
                    let segments = plane.div_ceil(wg * steps).max(1);
                    (segments, wg * plane.div_ceil(segments * wg).max(1))
                };
                let slots = |wg: u64| {
                    let (segments, task_items) = chunk(wg);
                    segments * task_items
                };
                let sizes = profile.planes_workgroup_sizes.map(u64::from);
                let best = sizes.iter().map(|&w| slots(w)).min().unwrap_or(1);
                let wg = sizes
                    .iter()
                    .copied()
                    .find(|&w| slots(w) * 100 <= best * 105)
                    .unwrap_or(wg_tensor);
                WalkGeometry {
                    walk,
                    wg,
                    lanes,
                    task_items: chunk(wg).1,
                    task_rows: 1,
                }
            }
            // A run covers its whole plane.
            Walk::Runs => WalkGeometry {
                walk,
                wg: wg_tensor,
                lanes,
                task_items: plane,
                task_rows: 1,
            },
            Walk::Columns => WalkGeometry {
                walk,
                wg: wg_tensor,
                lanes,
                task_items: 1,
                task_rows: task_rows.min(n.max(1)),
            },
        }
    }

    /// Tasks (partials) per channel of `rows` rows of `s_count` items.
    pub fn tasks(&self, rows: u64, s_count: u64) -> u64 {
        match self.walk {
            Walk::Planes => rows * s_count.div_ceil(self.task_items).max(1),
            Walk::Runs => rows,
            Walk::Columns => rows.div_ceil(self.task_rows).max(1) * s_count,
        }
    }

    /// Workgroups that cover `region` when each of its channels has `tasks` tasks.
    pub fn workgroups(&self, region: &Region, tasks: u64) -> u64 {
        match self.walk {
            Walk::Planes => region.channels * tasks,
            Walk::Runs => (region.rows * region.channels).div_ceil(self.wg / self.lanes),
            Walk::Columns => {
                (region.channels * region.s_count * (tasks / region.s_count)).div_ceil(self.wg)
            }
        }
    }
}

// ---- 3. per-dispatch parameters ---------------------------------------------------------------

/// One dispatch's uniform: `Block` in `shaders/pieces/common.wgsl`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct BlockParams {
    pub channels: u32,
    pub plane: u32,
    pub row_stride: u32,
    pub row_begin: u32,
    pub rows: u32,
    pub channel_begin: u32,
    pub dispatch_channels: u32,
    pub s_begin: u32,
    pub s_count: u32,
    pub bind_base: u32,
    pub tasks: u32,
    pub task_items: u32,
    pub task_rows: u32,
    pub task_offset: u32,
    pub total_tasks: u32,
    pub _pad0: u32,
    /// 1 / (i + 1) for i < 16: the merge ratios of `welford_push` in `stats.wgsl`.
    pub recip: [[f32; 4]; 4],
}

/// One dispatch's share of a tensor: its params and grid, and the window of every tensor it
/// binds (`bind_base` items from the tensor's start, `bind_items` long).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Block {
    pub params: BlockParams,
    pub grid: [u32; 2],
    pub bind_items: u64,
}

/// How one tensor shape is cut into blocks (each within one storage binding) and walk tasks.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    pub item: ItemWidth,
    /// The element type of the tensors walked (f16 items are half the bytes).
    pub dtype: DType,
    /// Bytes per item: lanes x element size.
    pub item_bytes: u64,
    pub geometry: WalkGeometry,
    pub blocks: Vec<Block>,
    /// Partials per channel over all blocks.
    pub total_tasks: u64,
    /// The tensor's channels (the blocks' `channels` count item channels: C / 4 with
    /// `Channels4` items).
    pub channels: u32,
    /// Grid for one workgroup per channel.
    pub channel_grid: [u32; 2],
}

impl Plan {
    /// Plans a non-empty (N, C, S) tensor for `target`. `vec4_ok` says whether every bound
    /// tensor allows vec4 reads (16-byte aligned offsets).
    pub fn new(n: u32, c: u32, s: u32, vec4_ok: bool, dtype: DType, target: &Target) -> Plan {
        let (limits, profile) = (&target.limits, &target.profile);
        let item = if vec4_ok && s.is_multiple_of(4) {
            ItemWidth::Vec4
        } else if vec4_ok
            && s == 1
            && c.is_multiple_of(4)
            && (c <= profile.channels4_any_rows || n <= profile.channels4_max_rows)
        {
            ItemWidth::Channels4
        } else {
            ItemWidth::Scalar
        };
        let item_bytes = item.lanes() * dtype.size();
        // The tensor as the kernels see it: (n, c64, plane) items.
        let plane = match item {
            ItemWidth::Channels4 => 1,
            _ => u64::from(s) / item.lanes(),
        };
        let (n64, c64) = (u64::from(n), u64::from(c / item.channel_lanes()));
        let values_per_item = item.lanes();
        let steps = steps_for(n64 * c64 * plane, values_per_item, profile);
        // A row narrower than a 32-byte memory sector (fewer than 16 values: counted for f16,
        // so that f16 tensors and their f32 twins cut the same tasks): on a GPU, one row per
        // task, so that a run of invocations reads neighbouring rows instead of a few values
        // of rows `task_rows` apart.
        let row_values = u64::from(c) * u64::from(s);
        let rows_per_task = if profile.min_invocations > 0 && row_values < 16 {
            1
        } else {
            steps
        };
        let task_rows = column_task_rows(row_values, rows_per_task, limits);
        let windows = Windows::new(n64, c64, plane, item_bytes, task_rows, limits);
        let geometry = WalkGeometry::choose(
            (n64, plane),
            (steps, task_rows),
            &windows,
            profile,
            target.force_walk,
        );
        // Pieces of a plane all get the tasks of a full window, so that a channel's partial
        // slots follow one stride; the spare tasks of the shorter last piece write empty
        // partials (see `span_start` in walk.wgsl).
        let tasks_of = |r: &Region| match windows.kind {
            WindowKind::Pieces => geometry.tasks(1, windows.window_items.min(plane)),
            _ => geometry.tasks(r.rows, r.s_count),
        };
        // A region's partials follow those of the earlier regions over the same channels.
        let mut next_slot: Vec<(u64, u64)> = Vec::new();
        let mut offsets = Vec::with_capacity(windows.regions.len());
        for r in &windows.regions {
            let tasks = tasks_of(r);
            let offset = match next_slot.iter_mut().find(|(ch, _)| *ch == r.channel_begin) {
                Some((_, next)) => {
                    let o = *next;
                    *next += tasks;
                    o
                }
                None => {
                    next_slot.push((r.channel_begin, tasks));
                    0
                }
            };
            offsets.push((offset, tasks));
        }
        let total_tasks = next_slot.iter().map(|&(_, t)| t).max().unwrap_or(0);
        let align_items = limits.align / item_bytes;
        let whole = windows.kind == WindowKind::Whole;
        let base = BlockParams {
            channels: c,
            plane: plane as u32,
            row_stride: (c64 * plane) as u32,
            task_items: geometry.task_items as u32,
            task_rows: geometry.task_rows as u32,
            total_tasks: total_tasks as u32,
            recip: std::array::from_fn(|i| std::array::from_fn(|j| 1.0 / (4 * i + j + 1) as f32)),
            ..BlockParams::default()
        };
        let blocks = windows
            .regions
            .iter()
            .zip(offsets)
            .map(|(r, (task_offset, tasks))| {
                let first = (r.row_begin * c64 + r.channel_begin) * plane + r.s_begin;
                let last = ((r.row_begin + r.rows - 1) * c64 + r.channel_begin + r.channels - 1)
                    * plane
                    + r.s_begin
                    + r.s_count;
                let bind_base = if whole {
                    0
                } else {
                    first / align_items * align_items
                };
                Block {
                    params: BlockParams {
                        row_begin: r.row_begin as u32,
                        rows: r.rows as u32,
                        channel_begin: r.channel_begin as u32,
                        dispatch_channels: r.channels as u32,
                        s_begin: r.s_begin as u32,
                        s_count: r.s_count as u32,
                        bind_base: bind_base as u32,
                        tasks: tasks as u32,
                        task_offset: task_offset as u32,
                        ..base
                    },
                    grid: grid(geometry.workgroups(r, tasks), limits.max_grid),
                    bind_items: last - bind_base,
                }
            })
            .collect();
        Plan {
            item,
            dtype,
            item_bytes,
            geometry,
            blocks,
            total_tasks,
            channels: c,
            channel_grid: grid(u64::from(c), limits.max_grid),
        }
    }

    /// Number of partials the reduction passes write (C * total_tasks).
    pub fn partials(&self) -> u64 {
        u64::from(self.channels) * self.total_tasks
    }
}

/// Folds `workgroups` into a 2-D grid whose x dimension stays within `max_dim`; kernels recover
/// the linear index and skip the overhang.
pub(crate) fn grid(workgroups: u64, max_dim: u32) -> [u32; 2] {
    let max_dim = u64::from(max_dim.max(1));
    if workgroups <= max_dim {
        [workgroups as u32, 1]
    } else {
        let y = workgroups.div_ceil(max_dim);
        let x = workgroups.div_ceil(y);
        [x as u32, y as u32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: KernelLimits = KernelLimits {
        max_grid: 65535,
        max_binding: 128 << 20,
        align: 256,
    };

    #[test]
    fn grid_folds_and_covers() {
        assert_eq!(grid(10, 65535), [10, 1]);
        let [x, y] = grid(200_000, 65535);
        assert!(x <= 65535 && u64::from(x) * u64::from(y) >= 200_000);
        let [x, y] = grid(17, 4);
        assert!(x <= 4 && x * y >= 17);
    }

    /// Every element of the tensor is covered by exactly one block, every partial slot by
    /// exactly one task, and every window fits the binding limit.
    fn check_cover(
        n: u32,
        c: u32,
        s: u32,
        vec4_ok: bool,
        limits: &KernelLimits,
        force: Option<Walk>,
    ) {
        for profile in [
            DeviceProfile::cpu(),
            DeviceProfile::gpu(32),
            DeviceProfile::gpu(64),
        ] {
            for dtype in [DType::F32, DType::F16] {
                let target = Target {
                    limits: *limits,
                    profile,
                    force_walk: force,
                };
                check_cover_of(n, c, s, vec4_ok, dtype, &target);
            }
        }
    }

    fn check_cover_of(n: u32, c: u32, s: u32, vec4_ok: bool, dtype: DType, target: &Target) {
        let (limits, force) = (&target.limits, target.force_walk);
        let plan = Plan::new(n, c, s, vec4_ok, dtype, target);
        let item_bytes = plan.item_bytes;
        // The tensor as the kernels see it: (n, c_items, plane) items.
        let lanes = plan.item.channel_lanes();
        let (c_items, plane) = match plan.item {
            ItemWidth::Channels4 => (c / lanes, 1),
            _ => (c, (u64::from(s) / plan.item.lanes()) as u32),
        };
        let total = (n * c_items * plane) as usize;
        let mut seen = vec![0u8; total];
        let total_tasks = plan.total_tasks as u32;
        let mut slots = vec![0u32; (c * total_tasks) as usize];
        let g = plan.geometry;
        for b in &plan.blocks {
            let p = &b.params;
            assert!(b.bind_items * item_bytes <= limits.max_binding);
            assert_eq!(u64::from(p.bind_base) * item_bytes % limits.align, 0);
            for ch in p.channel_begin..p.channel_begin + p.dispatch_channels {
                for r in p.row_begin..p.row_begin + p.rows {
                    for i in p.s_begin..p.s_begin + p.s_count {
                        let at = (r * c_items + ch) * plane + i;
                        assert!(at >= p.bind_base && u64::from(at - p.bind_base) < b.bind_items);
                        seen[at as usize] += 1;
                    }
                }
                for t in 0..p.tasks {
                    for j in 0..lanes {
                        slots[((ch * lanes + j) * total_tasks + p.task_offset + t) as usize] += 1;
                    }
                }
            }
            let workgroups = u64::from(b.grid[0]) * u64::from(b.grid[1]);
            match g.walk {
                Walk::Planes => {
                    assert_eq!(g.task_items % g.wg, 0);
                    assert!(g.task_items / g.wg <= MAX_STEPS);
                    let segments = p.s_count.div_ceil(p.task_items);
                    assert!(p.tasks >= p.rows * segments);
                    assert!(workgroups >= u64::from(p.tasks * p.dispatch_channels));
                }
                Walk::Runs => {
                    assert_eq!(p.tasks, p.rows);
                    assert!(u64::from(p.s_count).div_ceil(g.lanes) <= MAX_STEPS);
                    let planes = u64::from(p.rows * p.dispatch_channels);
                    assert!(workgroups * (g.wg / g.lanes) >= planes);
                }
                Walk::Columns => {
                    assert_eq!(p.tasks % p.s_count, 0);
                    assert!(u64::from(p.tasks / p.s_count) * g.task_rows >= u64::from(p.rows));
                    assert!(g.task_rows <= MAX_STEPS);
                }
            }
            assert!(b.grid[0] <= limits.max_grid);
        }
        assert!(
            seen.iter().all(|&v| v == 1),
            "{n}x{c}x{s} {force:?}: elements not covered once"
        );
        assert!(
            slots.iter().all(|&v| v == 1),
            "{n}x{c}x{s} {force:?}: partial slots not covered once"
        );
    }

    const FORCES: [Option<Walk>; 4] = [
        None,
        Some(Walk::Planes),
        Some(Walk::Runs),
        Some(Walk::Columns),
    ];

    #[test]
    fn plans_cover_every_item_once_for_every_walk() {
        for &(n, c, s) in &[
            (1, 1, 1),
            (2, 3, 5),
            (32, 64, 3136),
            (256, 1024, 1),
            (4, 2048, 49),
            (1, 1, 1 << 20),
        ] {
            for vec4_ok in [false, true] {
                for force in FORCES {
                    check_cover(n, c, s, vec4_ok, &LIMITS, force);
                }
            }
        }
    }

    #[test]
    fn small_windows_split_rows_planes_and_pieces() {
        let tiny = KernelLimits {
            max_grid: 7,
            max_binding: 4096,
            align: 32,
        };
        for &(n, c, s) in &[
            (64, 8, 9),
            (8, 3, 1000),
            (2, 2, 5000),
            (2, 2, 50_000),
            (300, 10, 1),
            (300, 12, 1),
            (3, 5, 7),
        ] {
            for vec4_ok in [false, true] {
                for force in FORCES {
                    check_cover(n, c, s, vec4_ok, &tiny, force);
                }
            }
        }
    }

    #[test]
    fn the_default_walks_follow_the_plane_length() {
        let target = |force| Target {
            limits: LIMITS,
            profile: DeviceProfile::cpu(),
            force_walk: force,
        };
        let walk = |s| {
            Plan::new(4, 8, s, false, DType::F32, &target(None))
                .geometry
                .walk
        };
        assert_eq!(walk(3136), Walk::Planes);
        assert_eq!(walk(196), Walk::Planes);
        assert_eq!(walk(49), Walk::Runs);
        assert_eq!(walk(7), Walk::Columns);
        assert_eq!(walk(1), Walk::Columns);
        // A forced walk that cannot serve falls back to the planes walk.
        let plan = Plan::new(4, 8, 1000, false, DType::F32, &target(Some(Walk::Runs)));
        assert_eq!(plan.geometry.walk, Walk::Planes);
    }
}
