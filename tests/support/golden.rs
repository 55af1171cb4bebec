//! Replays PyTorch-made golden cases (schema: `tests/data/golden/README.md`, copied from the
//! project's shared golden set) against the crate, with the golden README's tolerances.
//! Shared by the tests (as `support::golden`), `examples/golden.rs` (included with `#[path]`)
//! and the browser tests (`tests/web.rs`): written once, async, on the crate's async calls;
//! natively [`replay_file`] blocks on it.

#![allow(dead_code)]

#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

use serde_json::Value;
use wgpu_batchnorm::half;
use wgpu_batchnorm::{
    Activation, BatchNorm, BatchNormOptions, Context, DType, Flavor, MemoryFormat, Tensor,
};

/// The golden README's base tolerance.
pub const TOL: f64 = 1e-5;

/// One field's comparison: the worst error/allowed ratio (<= 1 passes).
#[derive(Debug, Clone)]
pub struct Check {
    pub step: usize,
    pub field: &'static str,
    pub ratio: f64,
}

/// The result of one case file.
#[derive(Debug, Clone, Default)]
pub struct CaseReport {
    pub name: String,
    pub checks: Vec<Check>,
    /// Problems that fail the case outright (an unexpected error, a count mismatch, ...).
    pub failures: Vec<String>,
    /// Why the case could not be checked (a field this crate cannot replay yet); a skipped
    /// case never counts as passed.
    pub skipped: Option<String>,
}

impl CaseReport {
    pub fn worst(&self) -> Option<&Check> {
        self.checks
            .iter()
            .max_by(|a, b| a.ratio.total_cmp(&b.ratio))
    }

    pub fn passed(&self) -> bool {
        self.skipped.is_none()
            && self.failures.is_empty()
            && self.checks.iter().all(|c| c.ratio <= 1.0)
    }

    /// One line: PASS/FAIL/SKIP, name, worst ratio and where, failures.
    pub fn line(&self) -> String {
        if let Some(why) = &self.skipped {
            return format!("SKIP {:<36} {why}", self.name);
        }
        let mut s = format!(
            "{} {:<36}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.name
        );
        match self.worst() {
            Some(w) => {
                s += &format!(
                    " worst err/allowed {:.3e} ({} step {})",
                    w.ratio, w.field, w.step
                )
            }
            None => s += " no numeric checks",
        }
        if !self.failures.is_empty() {
            s += &format!("; FAILURES: {}", self.failures.join("; "));
        }
        s
    }
}

pub fn f32s(v: &Value) -> Option<Vec<f32>> {
    v.as_array().map(|a| {
        a.iter()
            .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
            .collect()
    })
}

pub fn f64s(v: &Value) -> Option<Vec<f64>> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
}

pub fn usizes(v: &Value) -> Option<Vec<usize>> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_u64().unwrap_or(0) as usize).collect())
}

pub fn flavor_of(module: &str) -> Option<Flavor> {
    match module {
        "BatchNorm1d" => Some(Flavor::OneD),
        "BatchNorm2d" => Some(Flavor::TwoD),
        "BatchNorm3d" => Some(Flavor::ThreeD),
        _ => None,
    }
}

/// `||got - want||_2 / (TOL * k * ||want||_2)`.
pub fn rel_l2_ratio(got: &[f32], want: &[f64], k: f64) -> f64 {
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    ratio(err, TOL * k * norm)
}

pub fn ratio(err: f64, allowed: f64) -> f64 {
    if err.is_nan() {
        f64::INFINITY
    } else if allowed > 0.0 {
        err / allowed
    } else if err == 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Per-channel worst of `|got - want| / allowed(c)`.
pub fn per_channel_ratio(got: &[f32], want: &[f64], allowed: impl Fn(usize) -> f64) -> f64 {
    got.iter()
        .zip(want)
        .enumerate()
        .map(|(c, (&g, &w))| ratio((f64::from(g) - w).abs(), allowed(c)))
        .fold(0.0, f64::max)
}

/// Replays one file: a case, or a list of error probes (a top-level `probes` array, the schema
/// of `errors.json`), which counts as one case.
/// Replays the case file at `path` (blocking).
#[cfg(not(target_arch = "wasm32"))]
pub fn replay_file(ctx: &Context, path: &Path) -> CaseReport {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match std::fs::read_to_string(path) {
        Ok(text) => pollster::block_on(replay_text(ctx, &name, &text)),
        Err(e) => CaseReport {
            name,
            failures: vec![format!("cannot read: {e}")],
            ..Default::default()
        },
    }
}

/// Replays one case file's JSON `text` (`name` until the case names itself).
pub async fn replay_text(ctx: &Context, name: &str, text: &str) -> CaseReport {
    let mut report = CaseReport {
        name: name.to_string(),
        ..Default::default()
    };
    let doc: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            report.failures.push(format!("cannot parse: {e}"));
            return report;
        }
    };
    if let Some(probes) = doc["probes"].as_array() {
        replay_probes(ctx, probes, &mut report).await;
        return report;
    }
    if let Some(n) = doc["name"].as_str() {
        report.name = n.to_string();
    }
    if let Err(e) = replay_steps(ctx, &doc, &mut report).await {
        report.failures.push(e);
    }
    report
}

/// A case's module, shape and extended fields.
pub type CaseSetup = (BatchNorm, Vec<usize>, Extended);

/// A case's module as the case sets it up (options, activation, parameters, running buffers),
/// with its shape and extended fields; `Ok(Err(why))` for a case that cannot be replayed.
pub fn case_module(ctx: &Context, case: &Value) -> Result<Result<CaseSetup, String>, String> {
    let flavor = flavor_of(case["module"].as_str().unwrap_or(""))
        .ok_or_else(|| format!("unknown module {}", case["module"]))?;
    let shape = usizes(&case["shape"]).ok_or("no shape")?;
    let c = case["num_features"].as_u64().ok_or("no num_features")? as usize;
    let options = BatchNormOptions {
        eps: case["eps"].as_f64().ok_or("no eps")?,
        momentum: case["momentum"].as_f64(),
        affine: case["affine"].as_bool().ok_or("no affine")?,
        track_running_stats: case["track_running_stats"]
            .as_bool()
            .ok_or("no track_running_stats")?,
    };
    let ext = match Extended::parse(case) {
        Ok(ext) => ext,
        Err(why) => return Ok(Err(why)),
    };
    let mut bn = BatchNorm::new(ctx, flavor, c, options).map_err(|e| e.to_string())?;
    bn.set_activation(ext.activation);
    let err = |e: wgpu_batchnorm::Error| e.to_string();
    if options.affine {
        bn.set_weight(&f32s(&case["weight"]).ok_or("no weight")?)
            .map_err(err)?;
        bn.set_bias(&f32s(&case["bias"]).ok_or("no bias")?)
            .map_err(err)?;
    }
    if options.track_running_stats {
        bn.set_running_mean(&f32s(&case["running_mean_init"]).ok_or("no running_mean_init")?)
            .map_err(err)?;
        bn.set_running_var(&f32s(&case["running_var_init"]).ok_or("no running_var_init")?)
            .map_err(err)?;
        let nbt = case["num_batches_tracked_init"].as_u64().unwrap_or(0);
        bn.set_num_batches_tracked(nbt).map_err(err)?;
    }
    Ok(Ok((bn, shape, ext)))
}

/// The step's checks of `(running_mean, running_var)` on `c` channels, with the golden
/// README's tolerances.
pub fn running_ratios(
    step: &Value,
    (rm, rv): (&[f32], &[f32]),
    c: usize,
) -> Result<(f64, f64), String> {
    let kappa = step["kappa"].as_f64().unwrap_or(0.0);
    let kappa_c = f64s(&step["kappa_per_channel"]).unwrap_or_else(|| vec![kappa; c]);
    let rm64 = f64s(&step["running_mean_f64"]).ok_or("no running_mean_f64")?;
    let rv64 = f64s(&step["running_var_f64"]).ok_or("no running_var_f64")?;
    Ok((
        per_channel_ratio(rm, &rm64, |ch| {
            TOL * (rm64[ch].abs() + rv64[ch].max(0.0).sqrt())
        }),
        per_channel_ratio(rv, &rv64, |ch| {
            TOL * (1.0 + kappa_c.get(ch).copied().unwrap_or(kappa) / 30.0) * rv64[ch]
        }),
    ))
}

/// The step's check of `grad_weight` or `grad_bias` (`field`) against the case's, with the
/// golden README's per-channel tolerance; None where the case has no such field.
pub fn param_grad_ratio(
    step: &Value,
    field: &str,
    got: &[f32],
    ext: &Extended,
) -> Result<Option<f64>, String> {
    let Some(want) = f64s(&step[format!("{field}_f64")]) else {
        return Ok(None);
    };
    let scales =
        f64s(&step[format!("{field}_scale")]).ok_or_else(|| format!("no {field}_scale"))?;
    let kappa_c = f64s(&step["kappa_per_channel"]).unwrap_or_default();
    let k_c = |c: usize| 1.0 + kappa_c.get(c).copied().unwrap_or(0.0) / 30.0;
    let weighted = field == "grad_weight";
    Ok(Some(
        if got.len() == want.len() && scales.len() == want.len() {
            per_channel_ratio(got, &want, |c| {
                ext.tol.parameter_grads * if weighted { k_c(c) } else { 1.0 } * scales[c]
            })
        } else {
            f64::INFINITY
        },
    ))
}

async fn replay_steps(ctx: &Context, case: &Value, report: &mut CaseReport) -> Result<(), String> {
    let (mut bn, shape, ext) = match case_module(ctx, case)? {
        Ok(m) => m,
        Err(why) => {
            report.skipped = Some(why);
            return Ok(());
        }
    };
    let options = bn.options();
    let c = bn.num_features();
    let err = |e: wgpu_batchnorm::Error| e.to_string();
    let steps = case["steps"].as_array().ok_or("no steps")?;
    for (i, step) in steps.iter().enumerate() {
        bn.set_training(step["training"].as_bool().ok_or("step without training")?);
        let x = ext
            .upload(ctx, &step["input"], &shape)
            .await
            .ok_or("step without input")?
            .map_err(err)?;
        if !step["fold_scale_f64"].is_null() {
            check_fold(&mut bn, step, i, report).await?;
        }
        let residual = if ext.residual {
            let r = ext
                .upload(ctx, &step["residual"], &shape)
                .await
                .ok_or("step without residual")?;
            Some(r.map_err(err)?)
        } else {
            None
        };
        let (y, _) = bn
            .forward_with(&x)
            .residual(residual.as_ref())
            .run_async()
            .await
            .map_err(|e| format!("step {i}: forward failed: {e}"))?;
        let y = y.to_host_async().await.map_err(err)?;
        let k = step_k(step);
        report.checks.push(output_check((step, i), &y, &ext)?);
        if options.track_running_stats {
            let rm = bn
                .running_mean_async()
                .await
                .map_err(err)?
                .unwrap_or_default();
            let rv = bn
                .running_var_async()
                .await
                .map_err(err)?
                .unwrap_or_default();
            let count = bn.num_batches_tracked_async().await.map_err(err)?;
            push_running_checks(report, (step, i), (&rm, &rv), count, c)?;
        }
        if !step["grad_output"].is_null() {
            check_backward(ctx, &mut bn, (step, i), &shape, &ext, k, report).await?;
        }
    }
    Ok(())
}

/// Runs backward for the step's grad_output and checks grad_input, grad_weight, grad_bias.
async fn check_backward(
    ctx: &Context,
    bn: &mut BatchNorm,
    (step, i): (&Value, usize),
    shape: &[usize],
    ext: &Extended,
    k: f64,
    report: &mut CaseReport,
) -> Result<(), String> {
    let err = |e: wgpu_batchnorm::Error| e.to_string();
    let dy = ext
        .upload(ctx, &step["grad_output"], shape)
        .await
        .ok_or("grad_output not an array")?
        .map_err(err)?;
    let grads = bn
        .backward_async(&dy)
        .await
        .map_err(|e| format!("step {i}: backward failed: {e}"))?;
    let gx = grads.grad_input.to_host_async().await.map_err(err)?;
    report.checks.push(gradient_check(
        (step, i),
        "grad_input",
        &gx,
        ext.tol.elementwise * k,
    )?);
    let got = match &grads.grad_residual {
        Some(g) => Some(g.to_host_async().await.map_err(err)?),
        None => None,
    };
    push_optional_check(report, (step, i), "grad_residual", got, |got| {
        gradient_check((step, i), "grad_residual", got, ext.tol.elementwise)
    })?;
    let fields = [
        ("grad_weight", grads.grad_weight.as_ref()),
        ("grad_bias", grads.grad_bias.as_ref()),
    ];
    for (field, got) in fields {
        let got = match got {
            Some(g) => Some(g.to_host_async().await.map_err(err)?),
            None => None,
        };
        push_param_grad_check(report, (step, i), field, got, ext)?;
    }
    Ok(())
}

/// `K = 1 + kappa / 30`, the step's conditioning factor (the golden README).
pub fn step_k(step: &Value) -> f64 {
    1.0 + step["kappa"].as_f64().unwrap_or(0.0) / 30.0
}

/// The step's check of `output` (values in the case's memory order).
pub fn output_check(
    (step, i): (&Value, usize),
    y: &[f32],
    ext: &Extended,
) -> Result<Check, String> {
    let y64 = f64s(&step["output_f64"]).ok_or("no output_f64")?;
    if y64.len() != y.len() {
        return Err(format!(
            "step {i}: output_f64 has {} values, not {}",
            y64.len(),
            y.len()
        ));
    }
    Ok(Check {
        step: i,
        field: "output",
        ratio: rel_l2_ratio(y, &y64, step_k(step) * ext.tol.elementwise / TOL),
    })
}

/// The step's checks of the running buffers and `num_batches_tracked`.
pub fn push_running_checks(
    report: &mut CaseReport,
    (step, i): (&Value, usize),
    (rm, rv): (&[f32], &[f32]),
    count: Option<u64>,
    c: usize,
) -> Result<(), String> {
    let (mean_ratio, var_ratio) = running_ratios(step, (rm, rv), c)?;
    report.checks.push(Check {
        step: i,
        field: "running_mean",
        ratio: mean_ratio,
    });
    report.checks.push(Check {
        step: i,
        field: "running_var",
        ratio: var_ratio,
    });
    let want = step["num_batches_tracked"].as_u64();
    if want != count {
        report.failures.push(format!(
            "step {i}: num_batches_tracked {count:?}, expected {want:?}"
        ));
    }
    Ok(())
}

/// The step's check of an elementwise gradient (`grad_input` or `grad_residual`):
/// `||got - want||_2 <= allowed * <field>_scale_l2`.
pub fn gradient_check(
    (step, i): (&Value, usize),
    field: &'static str,
    got: &[f32],
    allowed: f64,
) -> Result<Check, String> {
    let want = f64s(&step[format!("{field}_f64")]).ok_or_else(|| format!("no {field}_f64"))?;
    let scale = step[format!("{field}_scale_l2")]
        .as_f64()
        .ok_or_else(|| format!("no {field}_scale_l2"))?;
    Ok(Check {
        step: i,
        field,
        ratio: if got.len() == want.len() {
            ratio(l2_diff(got, &want), allowed * scale)
        } else {
            f64::INFINITY
        },
    })
}

/// Pushes `check(got)` where both the call and the case have `field`, nothing where neither
/// has, and a failure where only one has.
pub fn push_optional_check(
    report: &mut CaseReport,
    (step, i): (&Value, usize),
    field: &str,
    got: Option<Vec<f32>>,
    check: impl FnOnce(&[f32]) -> Result<Check, String>,
) -> Result<(), String> {
    let in_case = !step[format!("{field}_f64")].is_null();
    match (got, in_case) {
        (None, false) => {}
        (Some(got), true) => report.checks.push(check(&got)?),
        (got, in_case) => report.failures.push(format!(
            "step {i}: {field} computed: {}, in the case: {in_case}",
            got.is_some()
        )),
    }
    Ok(())
}

/// The step's check of `grad_weight` or `grad_bias` (`field`), where computed or in the case.
pub fn push_param_grad_check(
    report: &mut CaseReport,
    (step, i): (&Value, usize),
    field: &'static str,
    got: Option<Vec<f32>>,
    ext: &Extended,
) -> Result<(), String> {
    push_optional_check(report, (step, i), field, got, |got| {
        Ok(Check {
            step: i,
            field,
            ratio: param_grad_ratio(step, field, got, ext)?.unwrap_or(f64::INFINITY),
        })
    })
}

/// ||got - want||_2.
pub fn l2_diff(got: &[f32], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The extended schema's fields (`dtype`, `layout`, `activation`, `residual`); absent fields
/// have the base meaning.
pub struct Extended {
    pub format: MemoryFormat,
    pub activation: Activation,
    pub residual: bool,
    pub dtype: DType,
    pub tol: Tolerances,
}

/// The golden README's TOL per quantity: float16 cases loosen the elementwise outputs (one
/// rounding to f16) and the parameter gradients; statistics and the fold keep 1e-5.
pub struct Tolerances {
    pub elementwise: f64,
    pub parameter_grads: f64,
}

impl Extended {
    /// An elementwise array of the case as a tensor of its dtype and layout (float16 values
    /// are parsed as f64, then rounded to f16, as the README requires).
    pub async fn upload(
        &self,
        ctx: &Context,
        v: &Value,
        shape: &[usize],
    ) -> Option<wgpu_batchnorm::Result<Tensor>> {
        let t = match self.dtype {
            DType::F16 => {
                let halves: Vec<half::f16> =
                    f64s(v)?.into_iter().map(half::f16::from_f64).collect();
                Tensor::from_f16_async(ctx, &halves, shape).await
            }
            _ => Tensor::from_slice_async(ctx, &f32s(v)?, shape).await,
        };
        Some(t.map(|t| t.with_memory_format(self.format)))
    }
}

impl Extended {
    /// The case's extended fields, or why they cannot be replayed.
    pub fn parse(case: &Value) -> Result<Self, String> {
        let (dtype, tol) = match case["dtype"].as_str() {
            None | Some("float32") => (
                DType::F32,
                Tolerances {
                    elementwise: TOL,
                    parameter_grads: TOL,
                },
            ),
            Some("float16") => (
                DType::F16,
                Tolerances {
                    elementwise: 1e-3,
                    parameter_grads: 1e-4,
                },
            ),
            Some(other) => return Err(format!("unknown dtype {other}")),
        };
        // The base cases describe their layout in words ("contiguous, row-major, ...").
        let format = match case["layout"].as_str() {
            None => MemoryFormat::Contiguous,
            Some(l) if l.starts_with("contiguous") => MemoryFormat::Contiguous,
            Some("channels_last") => MemoryFormat::ChannelsLast,
            Some(other) => return Err(format!("unknown layout {other}")),
        };
        let activation = match case["activation"].as_str() {
            None => Activation::Identity,
            Some("relu") => Activation::Relu,
            Some("relu6") => Activation::Relu6,
            Some("silu") => Activation::Silu,
            Some(other) => match other.strip_prefix("leaky_relu_").map(str::parse::<f32>) {
                Some(Ok(slope)) => Activation::LeakyRelu(slope),
                _ => return Err(format!("unknown activation {other}")),
            },
        };
        Ok(Extended {
            format,
            activation,
            residual: case["residual"].as_bool().unwrap_or(false),
            dtype,
            tol,
        })
    }
}

/// The eval fold from the module's buffers before the step against `fold_scale_f64` and
/// `fold_shift_f64`: `|scale - scale64| <= TOL K_c |scale64|`,
/// `|shift - shift64| <= TOL K_c fold_shift_scale`.
async fn check_fold(
    bn: &mut BatchNorm,
    step: &Value,
    i: usize,
    report: &mut CaseReport,
) -> Result<(), String> {
    let err = |e: wgpu_batchnorm::Error| e.to_string();
    let (scale, shift) = bn.eval_fold_async().await.map_err(err)?;
    let scale = scale.to_host_async().await.map_err(err)?;
    let shift = shift.to_host_async().await.map_err(err)?;
    let scale64 = f64s(&step["fold_scale_f64"]).ok_or("no fold_scale_f64")?;
    let shift64 = f64s(&step["fold_shift_f64"]).ok_or("no fold_shift_f64")?;
    let shift_scale = f64s(&step["fold_shift_scale"]).ok_or("no fold_shift_scale")?;
    let kappa_c = f64s(&step["kappa_per_channel"]).unwrap_or_default();
    let k_c = |c: usize| 1.0 + kappa_c.get(c).copied().unwrap_or(0.0) / 30.0;
    let sizes_ok = [scale64.len(), shift64.len(), shift_scale.len(), shift.len()]
        .iter()
        .all(|&l| l == scale.len());
    if !sizes_ok {
        return Err(format!("step {i}: fold arrays of different lengths"));
    }
    report.checks.push(Check {
        step: i,
        field: "fold_scale",
        ratio: per_channel_ratio(&scale, &scale64, |c| TOL * k_c(c) * scale64[c].abs()),
    });
    report.checks.push(Check {
        step: i,
        field: "fold_shift",
        ratio: per_channel_ratio(&shift, &shift64, |c| TOL * k_c(c) * shift_scale[c]),
    });
    Ok(())
}

async fn replay_probes(ctx: &Context, probes: &[Value], report: &mut CaseReport) {
    for probe in probes {
        if let Err(e) = replay_probe(ctx, probe).await {
            report
                .failures
                .push(format!("{}: {e}", probe["name"].as_str().unwrap_or("?")));
        }
    }
    report.name = format!("{} ({} probes)", report.name, probes.len());
}

async fn replay_probe(ctx: &Context, probe: &Value) -> Result<(), String> {
    let name = probe["name"].as_str().unwrap_or("");
    let flavor = flavor_of(probe["module"].as_str().unwrap_or(""))
        .ok_or_else(|| format!("unknown module {}", probe["module"]))?;
    let c = probe["num_features"].as_u64().ok_or("no num_features")? as usize;
    let mut options = BatchNormOptions::default();
    if let Some(kwargs) = probe["kwargs"].as_object() {
        for (key, value) in kwargs {
            match key.as_str() {
                "eps" => options.eps = value.as_f64().ok_or("eps not a number")?,
                "momentum" => options.momentum = value.as_f64(),
                "affine" => options.affine = value.as_bool().ok_or("affine not a bool")?,
                "track_running_stats" => {
                    options.track_running_stats =
                        value.as_bool().ok_or("track_running_stats not a bool")?
                }
                other => return Err(format!("unsupported constructor argument {other}")),
            }
        }
    }
    let shape = usizes(&probe["input_shape"]).ok_or("no input_shape")?;
    let mut bn = BatchNorm::new(ctx, flavor, c, options).map_err(|e| e.to_string())?;
    bn.set_training(probe["training"].as_bool().unwrap_or(true));
    let numel: usize = shape.iter().product();
    let data: Vec<f32> = (0..numel)
        .map(|i| ((i * 7919) % 13) as f32 * 0.25 - 1.5)
        .collect();
    let x = Tensor::from_slice_async(ctx, &data, &shape)
        .await
        .map_err(|e| e.to_string())?;
    let before = state(&bn).await?;
    let result = bn.forward_async(&x).await;
    let raises = probe["raises"].as_bool().unwrap_or(false);
    match (raises, result) {
        (true, Ok(_)) => Err(format!(
            "accepted, but torch raises {}: {}",
            probe["error_type"], probe["message"]
        )),
        (true, Err(e)) => {
            let want = probe["error_type"].as_str().unwrap_or("");
            if e.torch_kind() != Some(want) {
                return Err(format!(
                    "error kind {:?} ({e}), torch: {want}",
                    e.torch_kind()
                ));
            }
            if state(&bn).await? != before {
                return Err(format!("state changed by a rejected forward ({e})"));
            }
            Ok(())
        }
        (false, Err(e)) => {
            if name.ends_with("_NOT_CHECKED") && e.torch_kind().is_some() {
                Ok(())
            } else {
                Err(format!("rejected ({e}), torch accepts it"))
            }
        }
        (false, Ok(y)) => {
            if let Some(want) = usizes(&probe["output_shape"]).filter(|w| y.shape() != w) {
                return Err(format!("output shape {:?}, torch {want:?}", y.shape()));
            }
            let exact = |field: &str, got: Option<Vec<f32>>| -> Result<(), String> {
                let want = f32s(&probe[field]);
                if let Some(want) = want.filter(|w| got.as_deref() != Some(w.as_slice())) {
                    return Err(format!("{field} {got:?}, torch {want:?}"));
                }
                Ok(())
            };
            exact(
                "running_mean_after",
                bn.running_mean_async().await.map_err(|e| e.to_string())?,
            )?;
            exact(
                "running_var_after",
                bn.running_var_async().await.map_err(|e| e.to_string())?,
            )?;
            if let Some(want) = probe["num_batches_tracked_after"].as_u64() {
                let got = bn
                    .num_batches_tracked_async()
                    .await
                    .map_err(|e| e.to_string())?;
                if got != Some(want) {
                    return Err(format!("num_batches_tracked {got:?}, torch {want}"));
                }
            }
            Ok(())
        }
    }
}

type State = (Option<Vec<f32>>, Option<Vec<f32>>, Option<u64>);

async fn state(bn: &BatchNorm) -> Result<State, String> {
    let e = |e: wgpu_batchnorm::Error| e.to_string();
    Ok((
        bn.running_mean_async().await.map_err(e)?,
        bn.running_var_async().await.map_err(e)?,
        bn.num_batches_tracked_async().await.map_err(e)?,
    ))
}

/// The files of a path: the file itself, or every `*.json` in a folder, sorted.
#[cfg(not(target_arch = "wasm32"))]
pub fn collect(path: &Path) -> Vec<std::path::PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    let mut files: Vec<_> = std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}
