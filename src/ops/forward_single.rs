//! Host side of `shaders/forward_single.wgsl`: the forward in one dispatch (in training, batch
//! statistics, save_mean / save_invstd / M2 and the normalized output with its epilogue, and
//! with `forward_single_update.wgsl` the running update too; in eval, the output from the
//! running statistics) for shapes whose channels fit one workgroup or one invocation. CPU
//! oracles:
//! [`crate::reference::welford_partials`] and [`crate::reference::normalize`]; the planner that
//! picks it is [`single_pass`].

use super::{
    binding_family, Assembly, ChannelTensor, Epilogue, ItemWidth, KernelBindings, KernelSpec,
    Recorder, Specialize, Statistics,
};
use crate::profile::DeviceProfile;
pub use crate::profile::PassPlan;
use crate::tensor::DType;

binding_family! {
    /// What both single-dispatch forwards bind, in this order, before their own bindings.
    shared ForwardSingleTensors {
        /// The (rows, C, S) geometry, count and eps (`SingleParams`).
        shape: Uniform Whole "Single",
        /// The input, bound whole.
        x: Read Whole "array<Item>",
        /// The output, same shape (written).
        y: ReadWrite Whole "array<Item>",
        /// Per-channel scale; absent: 1 (affine = false).
        weight: Read Optional "array<f32>",
        /// Per-channel shift; absent: 0.
        bias: Read Optional "array<f32>",
        /// Added before the activation; absent: nothing added.
        residual: Read Optional "array<Item>",
        /// save_mean (written); with running statistics (eval) running_mean (only read).
        mean: ReadWrite Whole "array<f32>",
        /// save_invstd (written); with running statistics (eval) running_var (only read).
        spread: ReadWrite Whole "array<f32>",
    }

    /// The bindings of `forward_single.wgsl` + `forward_single_m2.wgsl`.
    ForwardSingleBindings for ForwardSingle {
        /// M2 per channel, for the running-statistics update (written).
        m2: ReadWrite Whole "array<f32>",
    }

    /// The bindings of `forward_single.wgsl` + `forward_single_update.wgsl`: the training
    /// forward that also updates the running statistics (10 storage buffers).
    ForwardSingleUpdateBindings for ForwardSingleUpdate {
        /// Momentum, count, biased (`UpdateParams`).
        upd: Uniform Whole "Update",
        /// Updated in place.
        running_mean: ReadWrite Whole "array<f32>",
        /// Updated in place.
        running_var: ReadWrite Whole "array<f32>",
        /// num_batches_tracked as two u32 words (low, high), incremented; absent: not counted.
        tracked: ReadWrite Optional "array<atomic<u32>, 2>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec::new(
    "forward_single",
    concat!(
        include_str!("../../shaders/forward_single.wgsl"),
        include_str!("../../shaders/pieces/forward_single_m2.wgsl")
    ),
    ForwardSingleBindings::SPEC,
    Assembly::ChannelTensor,
    256,
)
.statistics()
.epilogue();

/// The training forward with the running update in its own dispatch.
pub(crate) const UPDATE_SPEC: KernelSpec = KernelSpec::new(
    "forward_single_update",
    concat!(
        include_str!("../../shaders/forward_single.wgsl"),
        include_str!("../../shaders/pieces/forward_single_update.wgsl")
    ),
    ForwardSingleUpdateBindings::SPEC,
    Assembly::ChannelTensor,
    256,
)
.statistics()
.epilogue();

/// `Single` in `shaders/forward_single.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct SingleParams {
    pub channels: u32,
    pub rows: u32,
    pub s_count: u32,
    pub row_stride: u32,
    pub plane: u32,
    pub count: u32,
    pub eps: f32,
    pub _pad: u32,
}

impl SingleParams {
    /// The uniform of a (rows, C, S) tensor, `count` = rows * S values per channel, read as
    /// `how` reads it: with vec4 items across channels (S = 1), the kernel's channels and row
    /// stride count groups of four channels.
    pub fn new((rows, c, s): (u32, u32, u32), count: u32, eps: f32, how: ChannelTensor) -> Self {
        let lanes = how.lanes();
        SingleParams {
            channels: c / lanes,
            rows,
            s_count: s,
            row_stride: c * s / lanes,
            plane: s,
            count,
            eps,
            _pad: 0,
        }
    }
}

/// How the single dispatch covers a (rows, C, S) tensor on `profile`, or None where the
/// multi-pass path is the better (or the only) choice; `forced` pins the path where it can
/// serve the shape.
pub(crate) fn single_pass(
    (rows, c, s): (u32, u32, u32),
    dtype: DType,
    profile: &DeviceProfile,
    forced: Option<PassPlan>,
) -> Option<ChannelTensor> {
    let count = rows.checked_mul(s)?;
    if count == 0 || c == 0 {
        return None;
    }
    // Planes of one value ((N, C), channels-last) with C a multiple of 4: vec4 loads of four
    // neighbouring channels, a quarter of the scalar loads and loop steps.
    let item = if s == 1 && c.is_multiple_of(4) {
        ItemWidth::Channels4
    } else {
        ItemWidth::Scalar
    };
    // Short channels: a small workgroup, so that fewer invocations sit idle and the reduction
    // is shorter.
    let workgroup_size = |own: bool| if own || count <= 2048 { 64 } else { 256 };
    let elements = u64::from(count) * u64::from(c);
    let groups = u64::from(c / item.channel_lanes());
    let path = match forced {
        Some(path) => path,
        None if c >= profile.own_min_channels && count <= profile.own_max_values => {
            PassPlan::InvocationPerChannel
        }
        // On a GPU, one workgroup per channel where the channels alone launch the profile's
        // floor of invocations, as PyTorch's CUDA kernels give each channel a block: one
        // dispatch, each value read twice (the second from cache). Planes of at least a run
        // of values only: a run of invocations then reads neighbouring values of one plane
        // (or of two); with shorter planes (channels-last, (N, C)) its invocations would read
        // values a row apart, uncoalesced.
        None if profile.workgroup_per_channel
            && s >= profile.run_width
            && groups * u64::from(workgroup_size(false)) >= profile.invocation_floor(elements) =>
        {
            PassPlan::WorkgroupPerChannel
        }
        // Otherwise the multi-pass walks (why never a workgroup per channel on the CPU
        // profile: `DeviceProfile::cpu`).
        None => PassPlan::MultiPass,
    };
    let own_channel = match path {
        PassPlan::MultiPass => return None,
        PassPlan::WorkgroupPerChannel => false,
        PassPlan::InvocationPerChannel => true,
    };
    Some(ChannelTensor {
        dtype,
        workgroup_size: workgroup_size(own_channel),
        own_channel,
        item,
    })
}

impl ForwardSingleBindings {
    /// Records the dispatch for `channels` channels, per `how`, with batch statistics
    /// (training) or running ones (eval).
    pub fn encode(
        &self,
        rec: &mut Recorder<'_, '_>,
        how: ChannelTensor,
        (statistics, epilogue): (Statistics, Epilogue),
        channels: u32,
        max_grid: u32,
    ) {
        dispatch(rec, self, how, (statistics, epilogue), channels, max_grid);
    }
}

impl ForwardSingleUpdateBindings {
    /// Records the training forward with its running update for `channels` channels, per
    /// `how` (the caller checks `planner::fuses_update` first).
    pub fn encode(
        &self,
        rec: &mut Recorder<'_, '_>,
        how: ChannelTensor,
        epilogue: Epilogue,
        channels: u32,
        max_grid: u32,
    ) {
        let special = (Statistics::Batch, epilogue);
        dispatch(rec, self, how, special, channels, max_grid);
    }
}

/// One single-dispatch forward: one workgroup per channel (item lane group) or one invocation
/// each, folded into a 2-D grid.
fn dispatch(
    rec: &mut Recorder<'_, '_>,
    bindings: &impl KernelBindings,
    how: ChannelTensor,
    (statistics, epilogue): (Statistics, Epilogue),
    channels: u32,
    max_grid: u32,
) {
    let special = Specialize {
        statistics,
        epilogue,
        to_f16: false,
        channel_tensor: Some(how),
    };
    let workgroups = how.workgroups(channels);
    rec.dispatch(
        bindings,
        special,
        super::plan::grid(u64::from(workgroups), max_grid),
    );
}

#[cfg(test)]
mod tests {
    use super::{ForwardSingleBindings, SingleParams};
    use crate::ops::testing::{
        channel, channel_items as items, close, context, read, tensor, values,
    };
    use crate::ops::{ChannelTensor, Epilogue, Statistics};
    use crate::reference::{normalize, welford_partials};
    use crate::tensor::DType;
    use crate::workspace::Workspace;
    use crate::Tensor;

    /// (rows, C, S) shapes: planes of 77 values and of 1 (an invocation per channel possible),
    /// channels longer than a workgroup's span, more channels than one workgroup's invocations
    /// (in scalar items and, 260 channels, in vec4 items across channels).
    const SHAPES: [(usize, usize, usize); 5] = [
        (5, 3, 77),
        (300, 4, 1),
        (6, 130, 1),
        (9, 260, 1),
        (2, 2, 5000),
    ];

    /// The statistics and y match the oracles in both modes, both workgroup sizes and every item
    /// width, with and without weight and bias.
    #[test]
    fn forward_single_matches_its_oracles_in_every_mode() {
        let ctx = context(None);
        for (seed, &(n, c, s)) in SHAPES.iter().enumerate() {
            let seed = seed as u64;
            let shape = [n, c, s];
            let x = values(n * c * s, 400 + seed, 3.0, 9.0);
            let weight = values(c, 410 + seed, -2.0, 2.0);
            let bias = values(c, 420 + seed, -1.0, 1.0);
            let eps = 1e-3f32;
            let modes = [false, true].into_iter().flat_map(|own| {
                items(c, s)
                    .into_iter()
                    .flat_map(move |item| [(own, item, 64, true), (own, item, 256, false)])
            });
            for (own_channel, item, workgroup_size, affine) in modes {
                let what = format!(
                    "{shape:?} own {own_channel} {item:?} wg {workgroup_size} affine {affine}"
                );
                let how = ChannelTensor {
                    dtype: DType::F32,
                    workgroup_size,
                    own_channel,
                    item,
                };
                let mut ws = Workspace::new(&ctx);
                let y = Tensor::empty(&ctx, &shape).unwrap();
                let stats: Vec<Tensor> =
                    (0..3).map(|_| Tensor::empty(&ctx, &[c]).unwrap()).collect();
                let count = (n * s) as u32;
                let op = ForwardSingleBindings {
                    shape: ws.single_params(SingleParams::new(
                        (n as u32, c as u32, s as u32),
                        count,
                        eps,
                        how,
                    )),
                    x: tensor(&ctx, &x, &shape).slot(),
                    y: y.slot(),
                    weight: affine.then(|| tensor(&ctx, &weight, &[c]).slot()),
                    bias: affine.then(|| tensor(&ctx, &bias, &[c]).slot()),
                    residual: None,
                    mean: stats[0].slot(),
                    spread: stats[1].slot(),
                    m2: stats[2].slot(),
                };
                crate::ops::testing::run(&ctx, &mut ws, |rec| {
                    op.encode(
                        rec,
                        how,
                        (Statistics::Batch, Epilogue::NONE),
                        c as u32,
                        65535,
                    )
                });
                let got: Vec<Vec<f32>> = stats.iter().map(|t| read(&ctx, t.buffer(), c)).collect();
                let y = read(&ctx, y.buffer(), n * c * s);
                let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
                for ch in 0..c {
                    let (count, m, m2) = welford_partials(&channel(&x, n, c, s, ch));
                    mean[ch] = m;
                    var[ch] = m2 / count;
                    let invstd = 1.0 / (var[ch] + f64::from(eps)).sqrt();
                    assert!(
                        close(got[0][ch], m, 1e-6),
                        "{what} ch {ch}: mean {} {m}",
                        got[0][ch]
                    );
                    assert!(close(got[1][ch], invstd, 1e-5), "{what} ch {ch}: invstd");
                    assert!(close(got[2][ch], m2, 1e-4), "{what} ch {ch}: M2");
                }
                let wide = |v: &[f32]| v.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
                let (w, b) = if affine {
                    (wide(&weight), wide(&bias))
                } else {
                    (vec![1.0; c], vec![0.0; c])
                };
                let want = normalize(&x, &shape, &mean, &var, &w, &b, f64::from(eps)).unwrap();
                for (i, (&g, &w)) in y.iter().zip(&want).enumerate() {
                    assert!(close(g, w, 1e-4), "{what}: y[{i}] {g} {w}");
                }
            }
        }
    }
}

#[cfg(test)]
mod eval_tests {
    use super::{ForwardSingleBindings, SingleParams};
    use crate::ops::testing::{channel_items as items, close, context, read, run, tensor, values};
    use crate::ops::{ChannelTensor, Epilogue, Statistics};
    use crate::reference::normalize;
    use crate::tensor::DType;
    use crate::workspace::Workspace;
    use crate::Tensor;

    /// With running statistics (eval), y matches the oracle from running_mean and running_var
    /// in both modes and every item width, and the statistics buffers are left as they were.
    #[test]
    fn forward_single_eval_matches_its_oracle_in_every_mode() {
        let ctx = context(None);
        for (seed, &(n, c, s)) in [
            (5usize, 3usize, 77usize),
            (300, 4, 1),
            (6, 130, 7),
            (11, 136, 1),
        ]
        .iter()
        .enumerate()
        {
            let seed = seed as u64;
            let shape = [n, c, s];
            let x = values(n * c * s, 600 + seed, -3.0, 5.0);
            let running_mean = values(c, 610 + seed, -1.0, 1.0);
            let running_var = values(c, 620 + seed, 0.2, 3.0);
            let weight = values(c, 630 + seed, -2.0, 2.0);
            let eps = 1e-3f32;
            let modes = [false, true]
                .into_iter()
                .flat_map(|own| items(c, s).into_iter().map(move |item| (own, item)));
            for (own_channel, item) in modes {
                let how = ChannelTensor {
                    dtype: DType::F32,
                    workgroup_size: 64,
                    own_channel,
                    item,
                };
                let mut ws = Workspace::new(&ctx);
                let y = Tensor::empty(&ctx, &shape).unwrap();
                let (rm, rv) = (
                    tensor(&ctx, &running_mean, &[c]),
                    tensor(&ctx, &running_var, &[c]),
                );
                let dims = (n as u32, c as u32, s as u32);
                let op = ForwardSingleBindings {
                    shape: ws.single_params(SingleParams::new(dims, (n * s) as u32, eps, how)),
                    x: tensor(&ctx, &x, &shape).slot(),
                    y: y.slot(),
                    weight: Some(tensor(&ctx, &weight, &[c]).slot()),
                    bias: None,
                    residual: None,
                    mean: rm.slot(),
                    spread: rv.slot(),
                    m2: Tensor::empty(&ctx, &[c]).unwrap().slot(),
                };
                run(&ctx, &mut ws, |rec| {
                    op.encode(
                        rec,
                        how,
                        (Statistics::Running, Epilogue::NONE),
                        c as u32,
                        65535,
                    )
                });
                let wide = |v: &[f32]| v.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
                let want = normalize(
                    &x,
                    &shape,
                    &wide(&running_mean),
                    &wide(&running_var),
                    &wide(&weight),
                    &vec![0.0; c],
                    f64::from(eps),
                )
                .unwrap();
                let got = read(&ctx, y.buffer(), n * c * s);
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        close(g, w, 1e-5),
                        "{shape:?} own {own_channel} {item:?}: y[{i}] {g} {w}"
                    );
                }
                assert_eq!(
                    read(&ctx, rm.buffer(), c),
                    running_mean,
                    "running_mean changed"
                );
                assert_eq!(
                    read(&ctx, rv.buffer(), c),
                    running_var,
                    "running_var changed"
                );
            }
        }
    }
}

#[cfg(test)]
mod update_tests {
    use super::{ForwardSingleBindings, ForwardSingleUpdateBindings, SingleParams};
    use crate::ops::testing::{channel_items as items, context, read, run, tensor, values};
    use crate::ops::update_running::{UpdateParams, UpdateRunningBindings};
    use crate::ops::{Binding, ChannelTensor, Epilogue, Kernel, Statistics};
    use crate::tensor::DType;
    use crate::workspace::Workspace;
    use crate::{BatchCounter, Tensor};

    /// The forward with the running update in its own dispatch writes the same bits as the
    /// forward followed by the separate update (y, save_mean, save_invstd, running_mean,
    /// running_var), in both modes and every item width, and carries num_batches_tracked's
    /// increment into its high word.
    #[test]
    fn forward_single_update_matches_the_separate_update() {
        let ctx = context(None);
        assert!(crate::ops::Pipelines::of(&ctx).has(Kernel::ForwardSingleUpdate));
        for (seed, &(n, c, s)) in [(5usize, 3usize, 77usize), (40, 260, 1), (7, 130, 1)]
            .iter()
            .enumerate()
        {
            let seed = seed as u64;
            let shape = [n, c, s];
            let x = values(n * c * s, 700 + seed, -2.0, 6.0);
            let weight = values(c, 710 + seed, -2.0, 2.0);
            let rm0 = values(c, 720 + seed, -1.0, 1.0);
            let rv0 = values(c, 730 + seed, 0.5, 2.0);
            let modes = [false, true]
                .into_iter()
                .flat_map(|own| items(c, s).into_iter().map(move |item| (own, item)));
            for (own_channel, item) in modes {
                let what = format!("{shape:?} own {own_channel} {item:?}");
                let how = ChannelTensor {
                    dtype: DType::F32,
                    workgroup_size: 64,
                    own_channel,
                    item,
                };
                let update = UpdateParams {
                    channels: c as u32,
                    count: (n * s) as u32,
                    momentum: 0.3,
                    cumulative: 0,
                    update_stats: 1,
                    biased: 0,
                    _pad: [0; 2],
                };
                let params =
                    SingleParams::new((n as u32, c as u32, s as u32), (n * s) as u32, 1e-5, how);
                let x = tensor(&ctx, &x, &shape);
                let weight = tensor(&ctx, &weight, &[c]);
                // Outputs of each path: y, save_mean, save_invstd, running_mean, running_var.
                let mut results = Vec::new();
                for fused in [false, true] {
                    let mut ws = Workspace::new(&ctx);
                    let y = Tensor::empty(&ctx, &shape).unwrap();
                    let save: Vec<Tensor> =
                        (0..3).map(|_| Tensor::empty(&ctx, &[c]).unwrap()).collect();
                    let (rm, rv) = (tensor(&ctx, &rm0, &[c]), tensor(&ctx, &rv0, &[c]));
                    let counter = BatchCounter::new(&ctx).unwrap();
                    counter.set(u64::from(u32::MAX)).unwrap();
                    let tracked = Some(Binding::whole(counter.buffer()));
                    let shape_params = ws.single_params(params);
                    let upd = ws.update_params(update);
                    if fused {
                        let op = ForwardSingleUpdateBindings {
                            shape: shape_params,
                            x: x.slot(),
                            y: y.slot(),
                            weight: Some(weight.slot()),
                            bias: None,
                            residual: None,
                            mean: save[0].slot(),
                            spread: save[1].slot(),
                            upd,
                            running_mean: rm.slot(),
                            running_var: rv.slot(),
                            tracked,
                        };
                        run(&ctx, &mut ws, |rec| {
                            op.encode(rec, how, Epilogue::NONE, c as u32, 65535)
                        });
                    } else {
                        let op = ForwardSingleBindings {
                            shape: shape_params,
                            x: x.slot(),
                            y: y.slot(),
                            weight: Some(weight.slot()),
                            bias: None,
                            residual: None,
                            mean: save[0].slot(),
                            spread: save[1].slot(),
                            m2: save[2].slot(),
                        };
                        let update = UpdateRunningBindings {
                            upd,
                            save_mean: save[0].slot(),
                            m2: save[2].slot(),
                            running_mean: rm.slot(),
                            running_var: rv.slot(),
                            tracked,
                        };
                        run(&ctx, &mut ws, |rec| {
                            op.encode(
                                rec,
                                how,
                                (Statistics::Batch, Epilogue::NONE),
                                c as u32,
                                65535,
                            );
                            update.encode(rec);
                        });
                    }
                    assert_eq!(
                        counter.get().unwrap(),
                        1 << 32,
                        "{what} fused {fused}: count"
                    );
                    let read_c = |t: &Tensor| read(&ctx, t.buffer(), c);
                    results.push([
                        read(&ctx, y.buffer(), n * c * s),
                        read_c(&save[0]),
                        read_c(&save[1]),
                        read_c(&rm),
                        read_c(&rv),
                    ]);
                }
                for (k, name) in [
                    "y",
                    "save_mean",
                    "save_invstd",
                    "running_mean",
                    "running_var",
                ]
                .iter()
                .enumerate()
                {
                    assert_eq!(results[0][k], results[1][k], "{what}: {name}");
                }
                assert_ne!(results[1][3], rm0, "{what}: running_mean not updated");
            }
        }
    }
}
