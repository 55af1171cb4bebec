//! Shared by the ops' tests: contexts per walk, recording one op alone, reading buffers back.

use super::{ItemWidth, Plan, PreparedPlan, Recorder, Walk};
use crate::workspace::{Geometry, Workspace};
use crate::{Context, ContextOptions, Tensor};

/// The item widths the channel-tensor kernels can read a (rows, C, S) tensor in: vec4
/// across channels where planes hold one value and C is a multiple of 4.
pub fn channel_items(c: usize, s: usize) -> Vec<ItemWidth> {
    let mut items = vec![ItemWidth::Scalar];
    if s == 1 && c.is_multiple_of(4) {
        items.push(ItemWidth::Channels4);
    }
    items
}

/// A context whose tensor kernels use `walk` where it can serve.
pub fn context(walk: Option<Walk>) -> Context {
    Context::with_options(ContextOptions {
        forced: crate::profile::Forced {
            walk,
            ..Default::default()
        },
        ..ContextOptions::from_env()
    })
    .expect("a GPU adapter (on Linux without a GPU: apt-get install mesa-vulkan-drivers)")
}

/// Records what `f` records, alone, submits it and waits.
pub fn run(ctx: &Context, ws: &mut Workspace, f: impl FnOnce(&mut Recorder<'_, '_>)) {
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    ws.record(&mut encoder, "op test", f);
    ctx.queue().submit(Some(encoder.finish()));
    ctx.wait().expect("the op ran");
}

/// `len` f32 values of `buffer`.
pub fn read(ctx: &Context, buffer: &wgpu::Buffer, len: usize) -> Vec<f32> {
    crate::device::block_on(crate::device::read_f32(ctx, buffer, 0, len)).expect("readback")
}

/// Deterministic values in [lo, hi).
pub fn values(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((state >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

/// The values of channel `ch` of an (n, c, s) array.
pub fn channel(x: &[f32], n: usize, c: usize, s: usize, ch: usize) -> Vec<f32> {
    (0..n)
        .flat_map(|b| x[(b * c + ch) * s..(b * c + ch + 1) * s].iter().copied())
        .collect()
}

/// (n, c, s) shapes the tensor-kernel tests run on every walk: planes of 77 and 48 items
/// (a remainder and a multiple of 4), spatial size 1 with a long batch (vec4 items across
/// channels: one item channel, and three), and planes longer than one workgroup's span.
pub const SHAPES: [(usize, usize, usize); 5] = [
    (5, 3, 77),
    (4, 6, 48),
    (300, 4, 1),
    (37, 12, 1),
    (2, 2, 5000),
];

/// Calls `f(ctx, what, seed, shape)` for every walk and every shape: each on its own
/// context pinned to that walk, `what` naming both for assertion messages.
pub fn on_every_walk(
    shapes: &[(usize, usize, usize)],
    mut f: impl FnMut(&Context, &str, u64, (usize, usize, usize)),
) {
    for walk in Walk::ALL {
        let ctx = context(Some(walk));
        for (seed, &(n, c, s)) in shapes.iter().enumerate() {
            f(
                &ctx,
                &format!("{walk:?} {n}x{c}x{s}"),
                seed as u64,
                (n, c, s),
            );
        }
    }
}

/// A workspace and the plan of an (n, c, s) tensor on it.
pub fn prepare(
    ctx: &Context,
    (n, c, s): (usize, usize, usize),
) -> (Workspace, crate::device::Shared<PreparedPlan>) {
    let mut ws = Workspace::new(ctx);
    let prepared = ws.plan(Geometry {
        n: n as u32,
        c: c as u32,
        s: s as u32,
        vec4_ok: true,
        dtype: crate::tensor::DType::F32,
    });
    (ws, prepared)
}

/// The partials a reducing kernel wrote to the workspace, one list per channel in task
/// order.
pub fn channel_partials(
    ctx: &Context,
    ws: &Workspace,
    plan: &Plan,
    c: usize,
) -> Vec<Vec<[f32; 4]>> {
    let tasks = plan.total_tasks as usize;
    let flat = read(ctx, ws.partials_buffer().expect("partials"), c * tasks * 4);
    flat.chunks(tasks * 4)
        .map(|ch| ch.chunks(4).map(|p| [p[0], p[1], p[2], p[3]]).collect())
        .collect()
}

/// A tensor holding `data`.
pub fn tensor(ctx: &Context, data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(ctx, data, shape).expect("upload")
}

/// |got - want| within `rel` of max(1, |want|).
pub fn close(got: f32, want: f64, rel: f64) -> bool {
    (f64::from(got) - want).abs() <= rel * want.abs().max(1.0)
}
