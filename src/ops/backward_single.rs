//! Host side of `shaders/backward_single.wgsl`: the training backward in one dispatch (the
//! channel's sums, grad_weight, grad_bias and grad_input) for the shapes the single-dispatch
//! forward takes; with `backward_single_epilogue.wgsl`, through the fused epilogue (ReLU and
//! friends, the residual add) too. CPU oracles: [`crate::reference::backward_sums`],
//! [`crate::reference::backward_finalize`] and [`crate::reference::backward_input`] (the
//! epilogue's against the multi-pass kernels); the planner is
//! [`super::forward_single::single_pass`].

use super::{
    binding_family, Assembly, ChannelTensor, KernelBindings, KernelSpec, Recorder, Specialize,
};
use super::{Epilogue, Statistics};

binding_family! {
    /// What both single-dispatch backwards bind, in this order, before their own bindings.
    shared BackwardSingleTensors {
        /// The (rows, C, S) geometry and count (`SingleParams`).
        shape: Uniform Whole "Single",
        /// The forward's input, bound whole.
        x: Read Whole "array<Item>",
        /// grad_output (at the epilogue's output, where there is one), same shape.
        dy: Read Whole "array<Item>",
        /// grad_input (written); absent: not computed.
        dx: ReadWrite Optional "array<Item>",
        /// save_mean per channel.
        mean: Read Whole "array<f32>",
        /// save_invstd per channel.
        spread: Read Whole "array<f32>",
        /// Per-channel scale; absent: 1 (affine = false).
        weight: Read Optional "array<f32>",
        /// sum(dz * xhat) per channel (written).
        grad_weight: ReadWrite Optional "array<f32>",
        /// sum(dz) per channel (written).
        grad_bias: ReadWrite Optional "array<f32>",
    }

    /// The bindings of `backward_single.wgsl` + `backward_single_plain.wgsl` (dz = dy).
    BackwardSingleBindings for BackwardSingle {}

    /// The bindings of `backward_single.wgsl` + `backward_single_epilogue.wgsl`: the backward
    /// through the epilogue (11 storage buffers).
    BackwardSingleEpilogueBindings for BackwardSingleEpilogue {
        /// Per-channel shift; absent: 0.
        bias: Read Optional "array<f32>",
        /// The forward's residual, for the pre-activation; absent: none added (or not needed:
        /// identity).
        residual: Read Optional "array<Item>",
        /// dz, the gradient of the residual (written); absent: not computed.
        grad_residual: ReadWrite Optional "array<Item>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec::new(
    "backward_single",
    concat!(
        include_str!("../../shaders/backward_single.wgsl"),
        include_str!("../../shaders/pieces/param_grads.wgsl"),
        include_str!("../../shaders/pieces/backward_single_plain.wgsl")
    ),
    BackwardSingleBindings::SPEC,
    Assembly::ChannelTensor,
    256,
);

/// The backward through the epilogue in one dispatch.
pub(crate) const EPILOGUE_SPEC: KernelSpec = KernelSpec::new(
    "backward_single_epilogue",
    concat!(
        include_str!("../../shaders/backward_single.wgsl"),
        include_str!("../../shaders/pieces/param_grads.wgsl"),
        include_str!("../../shaders/pieces/backward_single_epilogue.wgsl")
    ),
    BackwardSingleEpilogueBindings::SPEC,
    Assembly::ChannelTensor,
    256,
)
.epilogue();

impl BackwardSingleBindings {
    /// Records the dispatch for `channels` channels, per `how`.
    pub fn encode(
        &self,
        rec: &mut Recorder<'_, '_>,
        how: ChannelTensor,
        channels: u32,
        max_grid: u32,
    ) {
        dispatch(rec, self, how, Epilogue::NONE, channels, max_grid);
    }
}

impl BackwardSingleEpilogueBindings {
    /// Records the dispatch through `epilogue` for `channels` channels, per `how` (where the
    /// device has the kernel: `Pipelines::has`).
    pub fn encode(
        &self,
        rec: &mut Recorder<'_, '_>,
        how: ChannelTensor,
        epilogue: Epilogue,
        channels: u32,
        max_grid: u32,
    ) {
        dispatch(rec, self, how, epilogue, channels, max_grid);
    }
}

/// One single-dispatch backward, folded into a 2-D grid.
fn dispatch(
    rec: &mut Recorder<'_, '_>,
    bindings: &impl KernelBindings,
    how: ChannelTensor,
    epilogue: Epilogue,
    channels: u32,
    max_grid: u32,
) {
    let special = Specialize {
        statistics: Statistics::Batch,
        epilogue,
        to_f16: false,
        channel_tensor: Some(how),
    };
    let grid = super::plan::grid(u64::from(how.workgroups(channels)), max_grid);
    rec.dispatch(bindings, special, grid);
}

#[cfg(test)]
mod tests {
    use super::BackwardSingleBindings;
    use crate::ops::forward_single::SingleParams;
    use crate::ops::testing::{
        channel, channel_items as items, close, context, read, run, tensor, values,
    };
    use crate::ops::ChannelTensor;
    use crate::reference::{backward_finalize, backward_input, backward_sums};
    use crate::tensor::DType;
    use crate::workspace::Workspace;
    use crate::Tensor;

    /// (rows, C, S) shapes as in the forward's test.
    const SHAPES: [(usize, usize, usize); 5] = [
        (5, 3, 77),
        (300, 4, 1),
        (6, 130, 1),
        (9, 260, 1),
        (2, 2, 5000),
    ];

    /// grad_weight, grad_bias and grad_input match the oracles in both modes, both workgroup
    /// sizes and every item width, with and without weight; without grad_input only the sums
    /// are written.
    #[test]
    fn backward_single_matches_its_oracles_in_every_mode() {
        let ctx = context(None);
        for (seed, &(n, c, s)) in SHAPES.iter().enumerate() {
            let seed = seed as u64;
            let shape = [n, c, s];
            let x = values(n * c * s, 500 + seed, -4.0, 4.0);
            let dy = values(n * c * s, 510 + seed, -1.0, 1.0);
            let mean = values(c, 520 + seed, -0.5, 0.5);
            let invstd = values(c, 530 + seed, 0.3, 2.0);
            let weight = values(c, 540 + seed, -2.0, 2.0);
            let modes = [false, true].into_iter().flat_map(|own| {
                items(c, s).into_iter().flat_map(move |item| {
                    [(64, true, true), (256, false, true), (64, true, false)]
                        .map(|(wg, affine, dx)| (own, item, wg, affine, dx))
                })
            });
            for (own_channel, item, workgroup_size, affine, with_dx) in modes {
                let what = format!(
                    "{shape:?} own {own_channel} {item:?} wg {workgroup_size} affine {affine} dx {with_dx}"
                );
                let how = ChannelTensor {
                    dtype: DType::F32,
                    workgroup_size,
                    own_channel,
                    item,
                };
                let mut ws = Workspace::new(&ctx);
                let dx = Tensor::empty(&ctx, &shape).unwrap();
                let (gw, gb) = (
                    Tensor::empty(&ctx, &[c]).unwrap(),
                    Tensor::empty(&ctx, &[c]).unwrap(),
                );
                let count = n * s;
                let dims = (n as u32, c as u32, s as u32);
                let op = BackwardSingleBindings {
                    shape: ws.single_params(SingleParams::new(dims, count as u32, 1e-5, how)),
                    x: tensor(&ctx, &x, &shape).slot(),
                    dy: tensor(&ctx, &dy, &shape).slot(),
                    dx: with_dx.then(|| dx.slot()),
                    mean: tensor(&ctx, &mean, &[c]).slot(),
                    spread: tensor(&ctx, &invstd, &[c]).slot(),
                    weight: affine.then(|| tensor(&ctx, &weight, &[c]).slot()),
                    grad_weight: Some(gw.slot()),
                    grad_bias: Some(gb.slot()),
                };
                run(&ctx, &mut ws, |rec| op.encode(rec, how, c as u32, 65535));
                let got = Grads {
                    grad_weight: read(&ctx, gw.buffer(), c),
                    grad_bias: read(&ctx, gb.buffer(), c),
                    grad_input: read(&ctx, dx.buffer(), n * c * s),
                };
                let gamma: Vec<f32> = if affine { weight.clone() } else { vec![1.0; c] };
                let dx_bound = with_dx;
                check_grads(
                    &what,
                    (n, c, s),
                    (&x, &dy),
                    (&mean, &invstd, &gamma),
                    &got,
                    dx_bound,
                );
            }
        }
    }

    /// What a backward wrote: grad_weight, grad_bias (C each), grad_input (like x).
    pub(super) struct Grads {
        pub grad_weight: Vec<f32>,
        pub grad_bias: Vec<f32>,
        pub grad_input: Vec<f32>,
    }

    /// `got` against the plain backward's oracles on `dy` (dz through an epilogue), per channel
    /// of the (n, c, s) tensor; a grad_input without a binding must stay zero.
    pub(super) fn check_grads(
        what: &str,
        (n, c, s): (usize, usize, usize),
        (x, dy): (&[f32], &[f32]),
        (mean, invstd, gamma): (&[f32], &[f32], &[f32]),
        got: &Grads,
        dx_bound: bool,
    ) {
        for ch in 0..c {
            let (xs, dys) = (channel(x, n, c, s, ch), channel(dy, n, c, s, ch));
            let sums = backward_sums(&xs, &dys, f64::from(mean[ch]));
            let (want_gw, want_gb, k) = backward_finalize(sums, f64::from(invstd[ch]), n * s);
            let scale = sums.0.abs() + sums.1.abs() + 1.0;
            assert!(
                (f64::from(got.grad_bias[ch]) - want_gb).abs() <= 1e-5 * scale,
                "{what} ch {ch}: grad_bias"
            );
            assert!(
                (f64::from(got.grad_weight[ch]) - want_gw).abs()
                    <= 1e-5 * scale * f64::from(invstd[ch]),
                "{what} ch {ch}: grad_weight"
            );
            let want = backward_input(
                &xs,
                &dys,
                f64::from(mean[ch]),
                f64::from(invstd[ch]),
                f64::from(gamma[ch]),
                Some(k),
            );
            let got_dx = channel(&got.grad_input, n, c, s, ch);
            for (i, (&g, &w)) in got_dx.iter().zip(&want).enumerate() {
                if dx_bound {
                    assert!(close(g, w, 1e-4), "{what} ch {ch}: dx[{i}] {g} {w}");
                } else {
                    assert_eq!(g, 0.0, "{what}: dx written without a binding");
                }
            }
        }
    }
}

#[cfg(test)]
mod epilogue_tests {
    use super::tests::{check_grads, Grads};
    use super::BackwardSingleEpilogueBindings;
    use crate::ops::forward_single::SingleParams;
    use crate::ops::testing::{channel_items as items, close, context, read, run, tensor, values};
    use crate::ops::{Activation, ChannelTensor, Epilogue, Kernel};
    use crate::reference::channel_affine;
    use crate::tensor::DType;
    use crate::workspace::Workspace;
    use crate::Tensor;

    /// Through every activation, with and without the residual, in both modes and every item
    /// width: grad_residual = dz = dy * act'(z), and grad_weight, grad_bias and grad_input are
    /// the plain backward's of dz. The residual keeps every z at least 0.02 from the kinks (0
    /// and 6), so that f32 and f64 agree on every mask.
    #[test]
    fn backward_single_epilogue_matches_its_oracles() {
        let ctx = context(None);
        assert!(crate::ops::Pipelines::of(&ctx).has(Kernel::BackwardSingleEpilogue));
        let acts = [
            Activation::Identity,
            Activation::Relu,
            Activation::Relu6,
            Activation::Silu,
            Activation::LeakyRelu(0.01),
        ];
        for (seed, &(n, c, s)) in [(5usize, 3usize, 77usize), (40, 260, 1)].iter().enumerate() {
            let seed = seed as u64;
            let shape = [n, c, s];
            let x = values(n * c * s, 800 + seed, -4.0, 8.0);
            let dy = values(n * c * s, 810 + seed, -1.0, 1.0);
            let mean = values(c, 820 + seed, 1.0, 2.0);
            let invstd = values(c, 830 + seed, 0.3, 2.0);
            let weight = values(c, 840 + seed, 0.5, 2.0);
            let bias = values(c, 850 + seed, -1.0, 3.0);
            let mut residual = values(n * c * s, 860 + seed, -1.0, 1.0);
            // z per value (f64, from the f32 coefficients the kernel uses), and the residual
            // nudged away from the kinks.
            let ch_of = |i: usize| (i / s) % c;
            let z_of = |i: usize, res: f32| {
                let ch = ch_of(i);
                let (scale, shift, _) = channel_affine(
                    0.0,
                    f64::from(invstd[ch]),
                    f64::from(weight[ch]),
                    f64::from(bias[ch]),
                );
                (f64::from(x[i]) - f64::from(mean[ch])) * scale + shift + f64::from(res)
            };
            for (i, res) in residual.iter_mut().enumerate() {
                let z = z_of(i, *res);
                if z.abs() < 0.02 || (z - 6.0).abs() < 0.02 {
                    *res += 0.05;
                }
            }
            for act in acts {
                for with_residual in [false, true] {
                    let modes = [false, true]
                        .into_iter()
                        .flat_map(|own| items(c, s).into_iter().map(move |item| (own, item)));
                    for (own_channel, item) in modes {
                        let what = format!(
                            "{shape:?} {act:?} residual {with_residual} own {own_channel} {item:?}"
                        );
                        let how = ChannelTensor {
                            dtype: DType::F32,
                            workgroup_size: 64,
                            own_channel,
                            item,
                        };
                        let mut ws = Workspace::new(&ctx);
                        let out = |shape: &[usize]| Tensor::empty(&ctx, shape).unwrap();
                        let (dx, grad_res, gw, gb) =
                            (out(&shape), out(&shape), out(&[c]), out(&[c]));
                        let count = n * s;
                        let dims = (n as u32, c as u32, s as u32);
                        let op = BackwardSingleEpilogueBindings {
                            shape: ws.single_params(SingleParams::new(
                                dims,
                                count as u32,
                                1e-5,
                                how,
                            )),
                            x: tensor(&ctx, &x, &shape).slot(),
                            dy: tensor(&ctx, &dy, &shape).slot(),
                            dx: Some(dx.slot()),
                            mean: tensor(&ctx, &mean, &[c]).slot(),
                            spread: tensor(&ctx, &invstd, &[c]).slot(),
                            weight: Some(tensor(&ctx, &weight, &[c]).slot()),
                            bias: Some(tensor(&ctx, &bias, &[c]).slot()),
                            residual: with_residual.then(|| tensor(&ctx, &residual, &shape).slot()),
                            grad_residual: Some(grad_res.slot()),
                            grad_weight: Some(gw.slot()),
                            grad_bias: Some(gb.slot()),
                        };
                        let epilogue = Epilogue::new(act);
                        run(&ctx, &mut ws, |rec| {
                            op.encode(rec, how, epilogue, c as u32, 65535)
                        });
                        let dz: Vec<f32> = (0..x.len())
                            .map(|i| {
                                let res = if with_residual { residual[i] } else { 0.0 };
                                (f64::from(dy[i]) * act.derivative(z_of(i, res))) as f32
                            })
                            .collect();
                        let got_res = read(&ctx, grad_res.buffer(), x.len());
                        for (i, (&g, &w)) in got_res.iter().zip(&dz).enumerate() {
                            assert!(
                                close(g, f64::from(w), 1e-5),
                                "{what}: grad_residual[{i}] {g} {w}"
                            );
                        }
                        let got = Grads {
                            grad_weight: read(&ctx, gw.buffer(), c),
                            grad_bias: read(&ctx, gb.buffer(), c),
                            grad_input: read(&ctx, dx.buffer(), x.len()),
                        };
                        let stats = (&mean[..], &invstd[..], &weight[..]);
                        check_grads(&what, (n, c, s), (&x, &dz), stats, &got, true);
                    }
                }
            }
        }
    }
}
