//! Host side of `shaders/backward_single.wgsl`: the training backward in one dispatch (the
//! channel's sums, grad_weight, grad_bias and grad_input) for the shapes the single-dispatch
//! forward takes, without an epilogue. CPU oracles: [`crate::reference::backward_sums`],
//! [`crate::reference::backward_finalize`] and [`crate::reference::backward_input`]; the
//! planner is [`super::forward_single::single_pass`].

use super::{bindings, Assembly, ChannelTensor, Kernel, KernelSpec, Recorder, Specialize};
use super::{Epilogue, Statistics};

bindings! {
    /// The bindings of `backward_single.wgsl`.
    BackwardSingleBindings {
        /// The (rows, C, S) geometry and count (`SingleParams`).
        shape: Uniform Whole "Single",
        /// The forward's input, bound whole.
        x: Read Whole "array<Item>",
        /// grad_output, same shape.
        dy: Read Whole "array<Item>",
        /// grad_input (written); absent: not computed.
        dx: ReadWrite Optional "array<Item>",
        /// save_mean per channel.
        mean: Read Whole "array<f32>",
        /// save_invstd per channel.
        spread: Read Whole "array<f32>",
        /// Per-channel scale; absent: 1 (affine = false).
        weight: Read Optional "array<f32>",
        /// sum(dy * xhat) per channel (written).
        grad_weight: ReadWrite Optional "array<f32>",
        /// sum(dy) per channel (written).
        grad_bias: ReadWrite Optional "array<f32>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec {
    prelude: "",
    name: "backward_single",
    source: include_str!("../../shaders/backward_single.wgsl"),
    bindings: BackwardSingleBindings::SPEC,
    assembly: Assembly::ChannelTensor,
    has_statistics: false,
    has_epilogue: false,
    has_direction: false,
    workgroup_size: 256,
};

impl BackwardSingleBindings {
    /// Records the dispatch for `channels` channels, per `how`.
    pub fn encode(
        &self,
        rec: &mut Recorder<'_, '_>,
        how: ChannelTensor,
        channels: u32,
        max_grid: u32,
    ) {
        let workgroups = how.workgroups(channels);
        let special = Specialize {
            statistics: Statistics::Batch,
            epilogue: Epilogue::NONE,
            to_f16: false,
            channel_tensor: Some(how),
        };
        rec.dispatch(
            Kernel::BackwardSingle,
            special,
            &self.resolve(None),
            super::plan::grid(u64::from(workgroups), max_grid),
        );
    }
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
                {
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
                    let (gw, gb) = (read(&ctx, gw.buffer(), c), read(&ctx, gb.buffer(), c));
                    let got_dx = read(&ctx, dx.buffer(), n * c * s);
                    for ch in 0..c {
                        let (xs, dys) = (channel(&x, n, c, s, ch), channel(&dy, n, c, s, ch));
                        let sums = backward_sums(&xs, &dys, f64::from(mean[ch]));
                        let (want_gw, want_gb, k) =
                            backward_finalize(sums, f64::from(invstd[ch]), count);
                        let scale = sums.0.abs() + sums.1.abs() + 1.0;
                        assert!(
                            (f64::from(gb[ch]) - want_gb).abs() <= 1e-5 * scale,
                            "{what} ch {ch}: grad_bias"
                        );
                        assert!(
                            (f64::from(gw[ch]) - want_gw).abs()
                                <= 1e-5 * scale * f64::from(invstd[ch]),
                            "{what} ch {ch}: grad_weight"
                        );
                        let gamma = if affine { f64::from(weight[ch]) } else { 1.0 };
                        let want = backward_input(
                            &xs,
                            &dys,
                            f64::from(mean[ch]),
                            f64::from(invstd[ch]),
                            gamma,
                            Some(k),
                        );
                        let got = channel(&got_dx, n, c, s, ch);
                        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                            if with_dx {
                                assert!(close(g, w, 1e-4), "{what} ch {ch}: dx[{i}] {g} {w}");
                            } else {
                                assert_eq!(g, 0.0, "{what}: dx written without a binding");
                            }
                        }
                    }
                }
            }
        }
    }
}
