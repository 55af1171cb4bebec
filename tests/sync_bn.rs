//! SyncBatchNorm over the in-process group (`LocalGroup`: a thread and a device per rank):
//! one batch split across the ranks gives the whole batch's results, uneven splits and empty
//! ranks included; a bad input on one rank is the same typed error on every rank and changes
//! no rank's module; f16, channels-last and the fused epilogue synchronise too. The same
//! scenarios run across processes under `mpirun` (`examples/sync_mpi.rs`, in CI).
#![cfg(not(target_arch = "wasm32"))]

mod support;

use support::Rng;
use wgpu_batchnorm::collective::{Collective, LocalGroup};
use wgpu_batchnorm::{
    Activation, BatchNorm, BatchNorm2d, BatchNormOptions, Context, DType, Error, MemoryFormat,
    SyncBatchNorm, Tensor,
};

/// A rank's forward and backward of (x, residual, dy): its output and grad_input.
type Step<'a> = dyn FnMut(&Tensor, &Tensor, &Tensor) -> (Vec<f32>, Vec<f32>) + 'a;

/// Runs `f(group)` on a thread per rank, each with its own context; the results in rank order.
fn on_ranks<R: Send>(k: usize, f: impl Fn(&Context, LocalGroup) -> R + Sync) -> Vec<R> {
    let groups = LocalGroup::with_timeout(k, std::time::Duration::from_secs(120));
    std::thread::scope(|s| {
        let runs: Vec<_> = groups
            .into_iter()
            .map(|g| {
                let f = &f;
                s.spawn(move || f(&support::context(), g))
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("a rank panicked"))
            .collect()
    })
}

/// The rows `[start, end)` of an (N, ...) array with `per` values per row.
fn rows(v: &[f32], (start, end): (usize, usize), per: usize) -> Vec<f32> {
    v[start * per..end * per].to_vec()
}

/// Each rank's [start, end) rows for row counts `split`.
fn ranges(split: &[usize]) -> Vec<(usize, usize)> {
    let mut at = 0;
    split
        .iter()
        .map(|&n| {
            at += n;
            (at - n, at)
        })
        .collect()
}

fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{what}[{i}]: {g} against {w}"
        );
    }
}

/// What a rank's module holds after its calls.
#[derive(Debug, PartialEq)]
struct Buffers {
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    tracked: u64,
}

fn buffers(bn: &BatchNorm) -> Buffers {
    Buffers {
        running_mean: bn.running_mean().unwrap().unwrap(),
        running_var: bn.running_var().unwrap().unwrap(),
        tracked: bn.num_batches_tracked().unwrap().unwrap(),
    }
}

/// The whole batch on one module: (y, grad_input, grad_weight, grad_bias, buffers after).
fn whole_batch(
    x: &[f32],
    dy: &[f32],
    shape: &[usize],
    options: BatchNormOptions,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Buffers) {
    let ctx = support::context();
    let mut bn = BatchNorm2d::with_options(&ctx, shape[1], options).unwrap();
    bn.set_weight(&[0.5, -1.5, 2.0]).unwrap();
    let y = bn
        .forward(&Tensor::from_slice(&ctx, x, shape).unwrap())
        .unwrap()
        .to_host()
        .unwrap();
    let g = bn
        .backward(&Tensor::from_slice(&ctx, dy, shape).unwrap())
        .unwrap();
    (
        y,
        g.grad_input.to_host().unwrap(),
        g.grad_weight.unwrap().to_host().unwrap(),
        g.grad_bias.unwrap().to_host().unwrap(),
        buffers(&bn),
    )
}

#[test]
fn a_split_batch_gives_the_whole_batch_results_on_every_split() {
    let (n, c, h, w) = (8, 3, 5, 3);
    let per = c * h * w;
    let mut rng = Rng::new(21);
    let x = rng.channel_data(&[n, c, h, w], &[1.0, -40.0, 3.0], &[1.0, 0.5, 4.0]);
    let dy = rng.vec_f32(n * per, -1.0, 1.0);
    let options = BatchNormOptions::default();
    let (y, dx, dw, db, whole) = whole_batch(&x, &dy, &[n, c, h, w], options);
    for split in [vec![3, 5], vec![0, 3, 1, 4], vec![2, 2, 2, 2], vec![8]] {
        let parts = ranges(&split);
        let results = on_ranks(split.len(), |ctx, group| {
            let (start, end) = parts[group.rank()];
            let shape = [end - start, c, h, w];
            let mut bn = BatchNorm2d::new(ctx, c).unwrap();
            bn.set_weight(&[0.5, -1.5, 2.0]).unwrap();
            let mut sbn = SyncBatchNorm::new(bn, group).unwrap();
            let xt = Tensor::from_slice(ctx, &rows(&x, (start, end), per), &shape).unwrap();
            let yt = sbn.forward(&xt).unwrap();
            let dyt = Tensor::from_slice(ctx, &rows(&dy, (start, end), per), &shape).unwrap();
            let g = sbn.backward(&dyt).unwrap();
            sbn.sum_param_grads(&g).unwrap();
            (
                yt.to_host().unwrap(),
                g.grad_input.to_host().unwrap(),
                g.grad_weight.unwrap().to_host().unwrap(),
                g.grad_bias.unwrap().to_host().unwrap(),
                buffers(sbn.module()),
            )
        });
        for (rank, (ys, dxs, dws, dbs, b)) in results.iter().enumerate() {
            let what = format!("split {split:?}, rank {rank}");
            close(
                ys,
                &rows(&y, parts[rank], per),
                1e-4,
                &format!("{what} output"),
            );
            close(
                dxs,
                &rows(&dx, parts[rank], per),
                1e-3,
                &format!("{what} grad_input"),
            );
            close(dws, &dw, 1e-3, &format!("{what} summed grad_weight"));
            close(dbs, &db, 1e-3, &format!("{what} summed grad_bias"));
            // Bit-identical on every rank: one merge, in rank order, everywhere.
            assert_eq!(
                b, &results[0].4,
                "{what}: running statistics differ between ranks"
            );
            close(
                &b.running_mean,
                &whole.running_mean,
                1e-5,
                &format!("{what} running_mean"),
            );
            close(
                &b.running_var,
                &whole.running_var,
                1e-4,
                &format!("{what} running_var"),
            );
            assert_eq!(b.tracked, 1, "{what}");
        }
    }
}

#[test]
fn a_bad_input_on_one_rank_is_the_same_error_on_every_rank_and_changes_nothing() {
    let (c, per) = (3, 3 * 4);
    for bad_rank in [0, 2] {
        let results = on_ranks(3, |ctx, group| {
            let rank = group.rank();
            let mut sbn = SyncBatchNorm::new(BatchNorm2d::new(ctx, c).unwrap(), group).unwrap();
            let good = Tensor::from_slice(ctx, &vec![1.5; 2 * per], &[2, c, 2, 2]).unwrap();
            // One step that works, so that there is something to keep.
            sbn.forward(&good).unwrap();
            let before = buffers(sbn.module());
            let wrong_channels = Tensor::from_slice(ctx, &[1.0; 2 * 4 * 4], &[2, 4, 2, 2]);
            let input = if rank == bad_rank {
                wrong_channels.unwrap()
            } else {
                good.clone()
            };
            let err = sbn.forward(&input).unwrap_err();
            let after = buffers(sbn.module());
            // The group is still in step: the next call works on every rank.
            sbn.forward(&good).unwrap();
            (err, before, after)
        });
        for (rank, (err, before, after)) in results.iter().enumerate() {
            match err {
                Error::Rank { rank: r, reason } => {
                    assert_eq!(*r, bad_rank, "rank {rank}: {err}");
                    assert!(reason.contains("running_mean"), "rank {rank}: {reason}");
                }
                other => panic!("rank {rank}: {other}"),
            }
            assert_eq!(err.torch_kind(), Some("RuntimeError"));
            assert_eq!(
                before, after,
                "rank {rank}: the rejected call changed the module"
            );
        }
    }
}

#[test]
fn ranks_whose_modules_or_calls_disagree_get_an_error_naming_the_rank() {
    // Another momentum on rank 1.
    let results = on_ranks(2, |ctx, group| {
        let momentum = if group.rank() == 1 {
            Some(0.3)
        } else {
            Some(0.1)
        };
        let options = BatchNormOptions {
            momentum,
            ..BatchNormOptions::default()
        };
        let bn = BatchNorm2d::with_options(ctx, 2, options).unwrap();
        let mut sbn = SyncBatchNorm::new(bn, group).unwrap();
        let x = Tensor::from_slice(
            ctx,
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            &[2, 2, 1, 2],
        )
        .unwrap();
        let err = sbn.forward(&x).unwrap_err();
        (err, buffers(sbn.module()))
    });
    for (err, b) in &results {
        assert!(
            matches!(err, Error::Rank { rank: 1, reason } if reason.contains("momentum 0.3")),
            "{err}"
        );
        assert_eq!(b.tracked, 0);
    }
    // A backward on one rank while the other runs a forward: out of step.
    let results = on_ranks(2, |ctx, group| {
        let rank = group.rank();
        let mut sbn = SyncBatchNorm::new(BatchNorm2d::new(ctx, 2).unwrap(), group).unwrap();
        let x = Tensor::from_slice(
            ctx,
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            &[2, 2, 1, 2],
        )
        .unwrap();
        sbn.forward(&x).unwrap();
        if rank == 0 {
            sbn.backward(&x).map(drop).unwrap_err()
        } else {
            sbn.forward(&x).map(drop).unwrap_err()
        }
    });
    for err in &results {
        assert!(
            matches!(err, Error::Rank { rank: 1, reason } if reason.contains("out of step")),
            "{err}"
        );
    }
}

#[test]
fn f16_channels_last_and_the_epilogue_synchronise_too() {
    let (n, c, h, w) = (6, 3, 2, 3);
    let per = c * h * w;
    let mut rng = Rng::new(5);
    let x = rng.channel_data(&[n, c, h, w], &[0.5, 2.0, -1.0], &[1.0, 0.3, 2.0]);
    let r = rng.vec_f32(n * per, -0.5, 0.5);
    let dy = rng.vec_f32(n * per, -1.0, 1.0);
    let split = [1usize, 5];
    let parts = ranges(&split);
    // Each configuration on two ranks against the same module on one device.
    for (dtype, format) in [
        (DType::F16, MemoryFormat::Contiguous),
        (DType::F32, MemoryFormat::ChannelsLast),
        (DType::F16, MemoryFormat::ChannelsLast),
    ] {
        let upload = |ctx: &Context, v: &[f32], shape: &[usize]| {
            let t = match dtype {
                DType::F16 => Tensor::from_f32_as_f16(ctx, v, shape).unwrap(),
                DType::F32 => Tensor::from_slice(ctx, v, shape).unwrap(),
            };
            to_format(ctx, t, format)
        };
        let run = |ctx: &Context, bn: &mut Step<'_>, (a, b): (usize, usize)| {
            let shape = [b - a, c, h, w];
            let (xt, rt, dyt) = (
                upload(ctx, &rows(&x, (a, b), per), &shape),
                upload(ctx, &rows(&r, (a, b), per), &shape),
                upload(ctx, &rows(&dy, (a, b), per), &shape),
            );
            bn(&xt, &rt, &dyt)
        };
        let ctx = support::context();
        let mut whole = BatchNorm2d::new(&ctx, c).unwrap();
        whole.set_activation(Activation::Relu);
        let want = run(
            &ctx,
            &mut |x, r, dy| {
                let y = whole.forward_residual(x, r).unwrap();
                let g = whole.backward(dy).unwrap();
                (host(&y), host(&g.grad_input))
            },
            (0, n),
        );
        let got = on_ranks(2, |ctx, group| {
            let range = parts[group.rank()];
            let mut bn = BatchNorm2d::new(ctx, c).unwrap();
            bn.set_activation(Activation::Relu);
            let mut sbn = SyncBatchNorm::new(bn, group).unwrap();
            run(
                ctx,
                &mut |x, r, dy| {
                    let y = sbn.forward_residual(x, r).unwrap();
                    let g = sbn.backward(dy).unwrap();
                    assert!(g.grad_residual.is_some());
                    (host(&y), host(&g.grad_input))
                },
                range,
            )
        });
        // f16 values hold 11 significant bits: one f16 rounding (about 5e-4 relative) plus the
        // different summation orders of the split; f32, the orders alone.
        let tol = if dtype == DType::F16 { 2e-3 } else { 1e-4 };
        for (rank, (y, dx)) in got.iter().enumerate() {
            let what = format!("{dtype:?} {format:?} rank {rank}");
            let (a, b) = parts[rank];
            close(y, &want.0[a * per..b * per], tol, &format!("{what} output"));
            close(
                dx,
                &want.1[a * per..b * per],
                tol,
                &format!("{what} grad_input"),
            );
        }
    }
}

#[test]
fn eval_and_a_group_of_one_exchange_nothing() {
    // Rank 1 never calls: rank 0's eval forwards must not wait for it.
    let results = on_ranks(2, |ctx, group| {
        let rank = group.rank();
        let mut sbn = SyncBatchNorm::new(BatchNorm2d::new(ctx, 2).unwrap(), group).unwrap();
        sbn.eval();
        if rank == 0 {
            let x = Tensor::from_slice(ctx, &[1.0, 2.0, 3.0, 4.0], &[1, 2, 1, 2]).unwrap();
            let y = sbn.forward(&x).unwrap();
            sbn.backward(&x).unwrap();
            host(&y)
        } else {
            Vec::new()
        }
    });
    // Running statistics 0 and 1: y = x / sqrt(1 + eps).
    close(&results[0], &[1.0, 2.0, 3.0, 4.0], 1e-4, "eval output");
    // A group of one is the plain module, whatever the batch.
    let ctx = support::context();
    let group = LocalGroup::new(1).pop().unwrap();
    let mut sbn = SyncBatchNorm::new(BatchNorm2d::new(&ctx, 2).unwrap(), group).unwrap();
    let x = Tensor::from_slice(&ctx, &[1.0, 2.0, 3.0, 4.0], &[1, 2, 1, 2]).unwrap();
    let y = sbn.forward(&x).unwrap();
    close(&host(&y), &[-1.0, 1.0, -1.0, 1.0], 1e-3, "group of one");
}

/// `values` of an (N, C, *spatial) tensor reordered between NCHW and channels-last
/// (`to_channels_last`), or back.
fn reorder(values: &[f32], shape: &[usize], to_channels_last: bool) -> Vec<f32> {
    let (n, c) = (shape[0], shape[1]);
    let sp: usize = shape[2..].iter().product();
    let mut out = vec![0.0; values.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..sp {
                let (nchw, nhwc) = ((b * c + ch) * sp + p, (b * sp + p) * c + ch);
                if to_channels_last {
                    out[nhwc] = values[nchw];
                } else {
                    out[nchw] = values[nhwc];
                }
            }
        }
    }
    out
}

/// A tensor's values, f16 widened, in NCHW order.
fn host(t: &Tensor) -> Vec<f32> {
    let v = match t.dtype() {
        DType::F16 => t
            .to_host_f16()
            .unwrap()
            .iter()
            .map(|h| h.to_f32())
            .collect(),
        DType::F32 => t.to_host().unwrap(),
    };
    match t.memory_format() {
        MemoryFormat::Contiguous => v,
        MemoryFormat::ChannelsLast => reorder(&v, t.shape(), false),
    }
}

/// `t` (NCHW values) stored in `format`.
fn to_format(ctx: &Context, t: Tensor, format: MemoryFormat) -> Tensor {
    if format == MemoryFormat::Contiguous {
        return t;
    }
    let nhwc = reorder(&host(&t), t.shape(), true);
    let s = t.shape();
    match t.dtype() {
        DType::F16 => Tensor::from_f32_as_f16(ctx, &nhwc, s).unwrap(),
        DType::F32 => Tensor::from_slice(ctx, &nhwc, s).unwrap(),
    }
    .with_memory_format(format)
}
