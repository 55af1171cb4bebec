//! Replays golden cases with SyncBatchNorm across MPI ranks: each case's batch split by rows of
//! dimension 0 across the ranks, each rank on its own device.
//!
//! ```sh
//! cargo build --release --features mpi --example sync_mpi
//! mpirun -n 2 target/release/examples/sync_mpi tests/data/golden tests/data/extended
//! mpirun -n 4 --oversubscribe target/release/examples/sync_mpi --split 0,3,1,4 tests/data/golden
//! ```
//!
//! `--split even` (the default) splits as evenly as possible, the remainder to the first
//! ranks; `--split A,B,...` gives each rank's rows (zeros allowed; they must add up to the
//! case's batch, else the case is skipped). Every rank checks its slice of `output`,
//! `grad_input` and `grad_residual` (the squared errors are gathered, so the check is the
//! schema's, on the whole tensor), the running statistics (and that they are bit-identical on
//! every rank), and `grad_weight` / `grad_bias` summed over the ranks
//! (`SyncBatchNorm::sum_param_grads`), with the schema's tolerances. Steps in eval mode without
//! running statistics normalize each rank's rows with its own statistics (PyTorch's
//! SyncBatchNorm exchanges nothing there), so a split of them is not the whole batch's result:
//! their outputs are not compared. Error probe files (`errors.json`) are single-process and
//! skipped. Rank 0 prints a line per case and `N passed, M failed` last; the exit status is
//! non-zero on any rank that failed.

#[path = "../tests/support/golden.rs"]
mod golden;

use std::path::PathBuf;
use std::rc::Rc;

use golden::{f64s, ratio, TOL};
use mpi::traits::Communicator;
use serde_json::Value;
use wgpu_batchnorm::collective::{Collective, MpiGroup};
use wgpu_batchnorm::{Context, DType, SyncBatchNorm, Tensor};

type Group = Rc<MpiGroup<mpi::topology::SimpleCommunicator>>;

fn main() {
    let Some(universe) = mpi::initialize() else {
        eprintln!("MPI was already initialised");
        std::process::exit(2);
    };
    let code = run(Rc::new(MpiGroup::new(universe.world())));
    // MPI_Finalize before the process exits, or mpirun reports an abnormal end.
    drop(universe);
    std::process::exit(code);
}

/// The replay on this rank; its exit status.
fn run(group: Group) -> i32 {
    let (rank, size) = (group.rank(), group.size());
    let mut split = Split::Even;
    let mut errors = false;
    let mut bench = false;
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--errors" {
            errors = true;
        } else if a == "--bench" {
            bench = true;
        } else if a == "--split" {
            let v = args.next().unwrap_or_default();
            split = if v == "even" {
                Split::Even
            } else {
                match v
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<Vec<usize>, _>>()
                {
                    Ok(rows) if rows.len() == size => Split::Rows(rows),
                    _ => {
                        eprintln!("--split: `even` or {size} row counts, got {v:?}");
                        return 2;
                    }
                }
            };
        } else {
            paths.push(PathBuf::from(a));
        }
    }
    if paths.is_empty() && !errors && !bench {
        eprintln!(
            "usage: mpirun -n K sync_mpi [--errors] [--split even|A,B,...] FOLDER_OR_FILE..."
        );
        return 2;
    }
    let ctx = match Context::new() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("rank {rank}: {e}");
            group.communicator().abort(2);
        }
    };
    if rank == 0 {
        println!("{size} ranks on {}", ctx.adapter());
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let files: Vec<PathBuf> = paths.iter().flat_map(|p| golden::collect(p)).collect();
    for file in files {
        let outcome = replay(&ctx, &group, &file, &split);
        // Every rank's verdict, worst ratio and notes, to rank 0.
        let (ok, worst, note) = match &outcome {
            Outcome::Checked {
                worst,
                failures,
                note,
            } => (failures.is_empty(), *worst, {
                let mut n = failures.join("; ");
                if !note.is_empty() {
                    n = if n.is_empty() {
                        note.clone()
                    } else {
                        format!("{n}; {note}")
                    };
                }
                n
            }),
            Outcome::Skipped(why) => (true, 0.0, why.clone()),
        };
        let all = group
            .all_gather(&[f64::from(u8::from(ok)), worst])
            .unwrap_or_default();
        let all_ok = all.iter().all(|m| m.first() == Some(&1.0));
        let worst = all
            .iter()
            .filter_map(|m| m.get(1))
            .fold(0.0f64, |a, &b| a.max(b));
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match outcome {
            Outcome::Skipped(_) => skipped += 1,
            _ if all_ok => passed += 1,
            _ => failed += 1,
        }
        if !ok {
            eprintln!("rank {rank}: {name}: {note}");
        }
        if rank == 0 {
            let status = match outcome {
                Outcome::Skipped(_) => "SKIP",
                _ if all_ok => "PASS",
                _ => "FAIL",
            };
            let note = if note.is_empty() {
                String::new()
            } else {
                format!(" ({note})")
            };
            println!("{status} {name:<40} worst err/allowed {worst:.3e}{note}");
        }
    }
    if errors {
        let result = error_scenarios(&ctx, &group);
        let all = group
            .all_gather(&[f64::from(u8::from(result.is_ok()))])
            .unwrap_or_default();
        let all_ok = all.iter().all(|m| m.first() == Some(&1.0));
        if let Err(e) = &result {
            eprintln!("rank {rank}: error scenarios: {e}");
        }
        if rank == 0 {
            println!(
                "{} error scenarios (a bad input on each rank in turn, modules that disagree)",
                if all_ok { "PASS" } else { "FAIL" }
            );
        }
        if all_ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    if bench {
        if let Err(e) = timings(&ctx, &group) {
            eprintln!("rank {rank}: bench: {e}");
            failed += 1;
        }
    }
    if rank == 0 {
        println!("{passed} passed, {failed} failed ({skipped} skipped)");
    }
    i32::from(failed > 0)
}

/// Median of `reps` timings of `f`, in microseconds.
fn median_us(reps: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = std::time::Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[reps / 2])
}

/// `--bench`: the exchange's cost per layer (one forward message of C channels: header,
/// count, mean and M2), and a training step of 32x64x56x56 split across the ranks, with
/// SyncBatchNorm and with a plain BatchNorm on the same rows, both blocking (forward, then
/// backward). Rank 0 prints the medians.
fn timings(ctx: &Context, group: &Group) -> Result<(), String> {
    use wgpu_batchnorm::BatchNorm2d;
    let err = |e: wgpu_batchnorm::Error| e.to_string();
    let (rank, size) = (group.rank(), group.size());
    for c in [64usize, 256, 1024, 2048] {
        let message = vec![0.5f64; 9 + 2 * c];
        group.all_gather(&message).map_err(err)?;
        let us = median_us(200, || group.all_gather(&message).map(drop).map_err(err))?;
        if rank == 0 {
            println!(
                "exchange, {size} ranks, C = {c}: {us:.1} us per layer and direction ({} bytes per rank)",
                8 * message.len()
            );
        }
    }
    let (n, c, hw) = (32usize, 64usize, 56 * 56);
    let rows = n / size + usize::from(rank < n % size);
    let shape = [rows, c, 56, 56];
    let x = Tensor::from_slice(ctx, &vec![0.5; rows * c * hw], &shape).map_err(err)?;
    let dy = Tensor::from_slice(ctx, &vec![0.25; rows * c * hw], &shape).map_err(err)?;
    let mut sync =
        SyncBatchNorm::new(BatchNorm2d::new(ctx, c).map_err(err)?, group.clone()).map_err(err)?;
    let mut local = BatchNorm2d::new(ctx, c).map_err(err)?;
    let mut sync_step = || -> Result<(), String> {
        sync.forward(&x).map_err(err)?;
        sync.backward(&dy).map(drop).map_err(err)
    };
    let mut local_step = || -> Result<(), String> {
        local.forward(&x).map_err(err)?;
        local.backward(&dy).map(drop).map_err(err)
    };
    // Alternating rounds, so that neither kind always runs on a warmer (or busier) machine.
    let (mut synced, mut alone) = (Vec::new(), Vec::new());
    sync_step()?;
    local_step()?;
    for _ in 0..3 {
        synced.push(median_us(5, &mut sync_step)?);
        alone.push(median_us(5, &mut local_step)?);
    }
    synced.sort_by(f64::total_cmp);
    alone.sort_by(f64::total_cmp);
    let (synced, alone) = (synced[1], alone[1]);
    let all = group.all_gather(&[synced, alone]).map_err(err)?;
    if rank == 0 {
        for (r, t) in all.iter().enumerate() {
            println!(
                "training step, {n}x{c}x56x56 split over {size} ranks, rank {r}: SyncBatchNorm {:.2} ms, BatchNorm on the same rows {:.2} ms",
                t[0] / 1e3,
                t[1] / 1e3
            );
        }
    }
    Ok(())
}

/// A bad input on each rank in turn: every rank gets the same `Error::Rank` naming it, no
/// rank's running statistics change, and the next call works everywhere; then modules that
/// disagree (another `num_features` on the last rank).
fn error_scenarios(ctx: &Context, group: &Group) -> Result<(), String> {
    use wgpu_batchnorm::{BatchNorm2d, Error};
    let err = |e: wgpu_batchnorm::Error| e.to_string();
    let (rank, size) = (group.rank(), group.size());
    let c = 3;
    let mut sbn =
        SyncBatchNorm::new(BatchNorm2d::new(ctx, c).map_err(err)?, group.clone()).map_err(err)?;
    let good = Tensor::from_slice(ctx, &[0.25, 1.0, -2.0, 4.0].repeat(2 * c), &[2, c, 2, 2])
        .map_err(err)?;
    let bad = Tensor::from_slice(ctx, &[1.0; 2 * 4 * 4], &[2, 4, 2, 2]).map_err(err)?;
    sbn.forward(&good).map_err(err)?;
    for bad_rank in 0..size {
        let before = (
            sbn.module().running_mean().map_err(err)?,
            sbn.module().num_batches_tracked().map_err(err)?,
        );
        let input = if rank == bad_rank { &bad } else { &good };
        match sbn.forward(input) {
            Err(Error::Rank { rank: r, .. }) if r == bad_rank => {}
            other => return Err(format!("bad input on rank {bad_rank}: {other:?}")),
        }
        let after = (
            sbn.module().running_mean().map_err(err)?,
            sbn.module().num_batches_tracked().map_err(err)?,
        );
        if before != after {
            return Err(format!(
                "bad input on rank {bad_rank} changed this rank's module"
            ));
        }
        sbn.forward(&good)
            .map_err(|e| format!("the call after the error on rank {bad_rank}: {e}"))?;
    }
    // Modules that disagree: the last rank's has another num_features.
    let features = if rank == size - 1 { c + 1 } else { c };
    let mut other =
        SyncBatchNorm::new(BatchNorm2d::new(ctx, features).map_err(err)?, group.clone())
            .map_err(err)?;
    let x =
        Tensor::from_slice(ctx, &vec![1.5; 2 * features * 4], &[2, features, 2, 2]).map_err(err)?;
    match other.forward(&x) {
        Err(Error::Rank { rank: r, reason })
            if r == size - 1 && reason.contains("num_features") =>
        {
            Ok(())
        }
        other => Err(format!("modules that disagree: {other:?}")),
    }
}

/// How a case's batch is split over the ranks.
enum Split {
    Even,
    Rows(Vec<usize>),
}

impl Split {
    /// Each rank's [start, end) rows of a batch of `n`, or None when the split does not fit.
    fn ranges(&self, n: usize, size: usize) -> Option<Vec<(usize, usize)>> {
        let rows: Vec<usize> = match self {
            Split::Even => (0..size)
                .map(|r| n / size + usize::from(r < n % size))
                .collect(),
            Split::Rows(rows) if rows.iter().sum::<usize>() == n => rows.clone(),
            Split::Rows(_) => return None,
        };
        let mut at = 0;
        Some(
            rows.iter()
                .map(|&k| {
                    at += k;
                    (at - k, at)
                })
                .collect(),
        )
    }
}

enum Outcome {
    Checked {
        worst: f64,
        failures: Vec<String>,
        note: String,
    },
    Skipped(String),
}

/// One case on this rank's rows.
fn replay(ctx: &Context, group: &Group, path: &std::path::Path, split: &Split) -> Outcome {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return Outcome::Skipped(format!("unreadable: {e}")),
    };
    let doc: Value = match serde_json::from_str(&text) {
        Ok(d) => d,
        Err(e) => return Outcome::Skipped(format!("not JSON: {e}")),
    };
    if doc["probes"].is_array() {
        return Outcome::Skipped("error probes are single-process".into());
    }
    let mut r = Replay {
        ctx,
        group,
        worst: 0.0,
        failures: Vec::new(),
        local_steps: 0,
    };
    match r.case(&doc, split) {
        Ok(Some(why)) => Outcome::Skipped(why),
        Ok(None) => Outcome::Checked {
            worst: r.worst,
            failures: r.failures,
            note: if r.local_steps > 0 {
                format!(
                    "{} eval steps without running stats: local by design",
                    r.local_steps
                )
            } else {
                String::new()
            },
        },
        Err(e) => Outcome::Checked {
            worst: f64::INFINITY,
            failures: vec![e],
            note: String::new(),
        },
    }
}

struct Replay<'a> {
    ctx: &'a Context,
    group: &'a Group,
    worst: f64,
    failures: Vec<String>,
    local_steps: usize,
}

impl Replay<'_> {
    fn check(&mut self, what: String, ratio: f64) {
        self.worst = self.worst.max(ratio);
        if ratio.is_nan() || ratio > 1.0 {
            self.failures
                .push(format!("{what}: err/allowed {ratio:.3e}"));
        }
    }

    /// `||got - want||` over every rank's slice against `allowed` (computed from the whole
    /// tensor by the caller): the squared errors gathered, so every rank checks the whole.
    fn gathered_l2(&self, got: &[f32], want: &[f64]) -> Result<f64, String> {
        let local: f64 = got
            .iter()
            .zip(want)
            .map(|(&g, &w)| (f64::from(g) - w).powi(2))
            .sum();
        let all = self.group.all_gather(&[local]).map_err(|e| e.to_string())?;
        Ok(all.iter().filter_map(|m| m.first()).sum::<f64>().sqrt())
    }

    /// Returns Some(reason) for a case it skips.
    fn case(&mut self, case: &Value, split: &Split) -> Result<Option<String>, String> {
        let err = |e: wgpu_batchnorm::Error| e.to_string();
        let (bn, shape, ext) = match golden::case_module(self.ctx, case)? {
            Ok(m) => m,
            Err(why) => return Ok(Some(why)),
        };
        let (options, c) = (bn.options(), bn.num_features());
        let size = self.group.size();
        let Some(ranges) = split.ranges(shape[0], size) else {
            return Ok(Some(format!(
                "the split does not add up to N = {}",
                shape[0]
            )));
        };
        let (a, b) = ranges[self.group.rank()];
        let per: usize = shape[1..].iter().product();
        let mut local_shape = shape.clone();
        local_shape[0] = b - a;
        let slice = |v: &Value| -> Option<Value> {
            let all = v.as_array()?;
            Some(Value::Array(all.get(a * per..b * per)?.to_vec()))
        };
        let mut sbn = SyncBatchNorm::new(bn, self.group.clone()).map_err(err)?;
        let upload = |v: &Value| -> Result<Tensor, String> {
            let part = slice(v).ok_or("an array shorter than its shape")?;
            pollster::block_on(ext.upload(self.ctx, &part, &local_shape))
                .ok_or("not an array")?
                .map_err(err)
        };
        let steps = case["steps"].as_array().ok_or("no steps")?;
        for (i, step) in steps.iter().enumerate() {
            let training = step["training"].as_bool().ok_or("step without training")?;
            if training {
                sbn.train();
            } else {
                sbn.eval();
            }
            // Eval without running statistics: each rank's own batch statistics, by design.
            let comparable = training || options.track_running_stats;
            if !comparable {
                self.local_steps += 1;
            }
            let x = upload(&step["input"])?;
            let residual = if ext.residual {
                Some(upload(&step["residual"])?)
            } else {
                None
            };
            let y = match &residual {
                Some(r) => sbn.forward_residual(&x, r),
                None => sbn.forward(&x),
            }
            .map_err(|e| format!("step {i}: forward: {e}"))?;
            let k = 1.0 + step["kappa"].as_f64().unwrap_or(0.0) / 30.0;
            let y64 = f64s(&step["output_f64"]).ok_or("no output_f64")?;
            let y = host(&y)?;
            let diff = self.gathered_l2(&y, &y64[a * per..b * per])?;
            if comparable {
                let norm = y64.iter().map(|w| w * w).sum::<f64>().sqrt();
                self.check(
                    format!("step {i} output"),
                    ratio(diff, TOL * k * norm * ext.tol.elementwise / TOL),
                );
            }
            if options.track_running_stats {
                self.running(&sbn, step, i, c)?;
            }
            if !step["grad_output"].is_null() {
                let dy = upload(&step["grad_output"])?;
                let grads = sbn
                    .backward(&dy)
                    .map_err(|e| format!("step {i}: backward: {e}"))?;
                // Collective: every rank calls it for every backward.
                sbn.sum_param_grads(&grads).map_err(err)?;
                let scale = step["grad_input_scale_l2"]
                    .as_f64()
                    .ok_or("no grad_input_scale_l2")?;
                let gx64 = f64s(&step["grad_input_f64"]).ok_or("no grad_input_f64")?;
                let diff = self.gathered_l2(&host(&grads.grad_input)?, &gx64[a * per..b * per])?;
                if comparable {
                    self.check(
                        format!("step {i} grad_input"),
                        ratio(diff, ext.tol.elementwise * k * scale),
                    );
                }
                if let (Some(got), Some(want)) =
                    (&grads.grad_residual, f64s(&step["grad_residual_f64"]))
                {
                    let scale = step["grad_residual_scale_l2"].as_f64().ok_or("no scale")?;
                    let diff = self.gathered_l2(&host(got)?, &want[a * per..b * per])?;
                    if comparable {
                        self.check(
                            format!("step {i} grad_residual"),
                            ratio(diff, ext.tol.elementwise * scale),
                        );
                    }
                }
                for (field, got) in [
                    ("grad_weight", &grads.grad_weight),
                    ("grad_bias", &grads.grad_bias),
                ] {
                    let Some(got) = got else { continue };
                    let got = got.to_host().map_err(err)?;
                    let ratio = golden::param_grad_ratio(step, field, &got, &ext)?;
                    if let (true, Some(ratio)) = (comparable, ratio) {
                        self.check(format!("step {i} {field} (summed over ranks)"), ratio);
                    }
                }
            }
        }
        Ok(None)
    }

    /// The running statistics against the case's, and bit-identical on every rank.
    fn running(
        &mut self,
        sbn: &SyncBatchNorm,
        step: &Value,
        i: usize,
        c: usize,
    ) -> Result<(), String> {
        let err = |e: wgpu_batchnorm::Error| e.to_string();
        let bn = sbn.module();
        let rm = bn.running_mean().map_err(err)?.unwrap_or_default();
        let rv = bn.running_var().map_err(err)?.unwrap_or_default();
        let (mean_ratio, var_ratio) = golden::running_ratios(step, (&rm, &rv), c)?;
        self.check(format!("step {i} running_mean"), mean_ratio);
        self.check(format!("step {i} running_var"), var_ratio);
        let mine: Vec<f64> = rm.iter().chain(&rv).map(|&v| f64::from(v)).collect();
        let all = self.group.all_gather(&mine).map_err(err)?;
        if all.iter().any(|m| m != &mine) {
            self.failures
                .push(format!("step {i}: running statistics differ between ranks"));
        }
        let want = step["num_batches_tracked"].as_u64();
        let got = bn.num_batches_tracked().map_err(err)?;
        if want != got {
            self.failures.push(format!(
                "step {i}: num_batches_tracked {got:?}, expected {want:?}"
            ));
        }
        Ok(())
    }
}

/// A tensor's values (f16 widened) in memory order, as the cases hold them.
fn host(t: &Tensor) -> Result<Vec<f32>, String> {
    let e = |e: wgpu_batchnorm::Error| e.to_string();
    Ok(match t.dtype() {
        DType::F16 => t
            .to_host_f16()
            .map_err(e)?
            .iter()
            .map(|h| h.to_f32())
            .collect(),
        DType::F32 => t.to_host().map_err(e)?,
    })
}
