//! Replays golden cases (the `tests/data/golden` and `tests/data/extended` schemas) through the
//! Burn module: inputs as Burn tensors on an autodiff device, `forward` (or
//! `forward_residual`), then the gradients of `(y * grad_output).sum()` from Burn's
//! `backward()`, each field checked with the schema's tolerances.
//!
//! ```sh
//! cargo run --release -p wgpu-batchnorm-burn --example burn_golden -- tests/data/golden tests/data/extended
//! ```
//!
//! Prints one line per case and `N passed, M failed` last; exits non-zero on a failure. Error
//! probe files (`errors.json`, the core API's probes) are listed as not applicable.
//! `WGPU_BACKEND` picks the backend; build with `--no-default-features` for Burn without fusion.

#[path = "../../tests/support/golden.rs"]
mod golden;

use std::path::PathBuf;

use burn::tensor::{DType, Device, Tensor, TensorData};
use golden::{CaseReport, Extended, f32s, f64s, usizes};
use serde_json::Value;
use wgpu_batchnorm::MemoryFormat;
use wgpu_batchnorm_burn::{BatchNorm, BatchNormConfig};

fn main() {
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() {
        eprintln!("usage: burn_golden PATH... (case files or folders of *.json cases)");
        std::process::exit(2);
    }
    let (wgpu_device, ctx) = match wgpu_batchnorm_burn::new_shared_device() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "adapter: {}; Burn fusion: {}",
        ctx.adapter(),
        if cfg!(feature = "fusion") {
            "on"
        } else {
            "off"
        }
    );
    let device = Device::new(wgpu_device).autodiff();
    let (mut passed, mut failed, mut not_applicable) = (0, 0, 0);
    for path in &paths {
        let files = golden::collect(path);
        if files.is_empty() {
            println!("FAIL {}: no *.json files", path.display());
            failed += 1;
        }
        for file in files {
            let name = file
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let doc: Value = match std::fs::read_to_string(&file)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            {
                Ok(doc) => doc,
                Err(e) => {
                    println!("FAIL {name}: {e}");
                    failed += 1;
                    continue;
                }
            };
            if doc["probes"].is_array() {
                println!("N/A  {name:<36} error probes of the core API");
                not_applicable += 1;
                continue;
            }
            if doc["dtype"].as_str() == Some("float16") && !device.supports_dtype(DType::F16) {
                // This crate runs f16 there (as u32 words); Burn cannot make the tensors.
                println!("N/A  {name:<36} float16: Burn has no f16 on this adapter");
                not_applicable += 1;
                continue;
            }
            let mut report = CaseReport {
                name: doc["name"].as_str().unwrap_or(&name).to_string(),
                ..Default::default()
            };
            if let Err(e) = replay(&device, &doc, &mut report) {
                report.failures.push(e);
            }
            println!("{}", report.line());
            if report.passed() {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    if not_applicable > 0 {
        println!("{not_applicable} not applicable");
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

/// The memory order of the case's arrays: logical (N, C, *spatial), or channels-last
/// (N, *spatial, C).
fn memory_dims(shape: &[usize], format: MemoryFormat) -> Vec<usize> {
    match format {
        MemoryFormat::ChannelsLast if shape.len() > 2 => {
            let mut dims = vec![shape[0]];
            dims.extend_from_slice(&shape[2..]);
            dims.push(shape[1]);
            dims
        }
        _ => shape.to_vec(),
    }
}

/// The axes that take memory order to logical order, and back.
fn to_logical(rank: usize) -> Vec<isize> {
    let mut axes = vec![0, rank as isize - 1];
    axes.extend((1..rank as isize - 1).collect::<Vec<_>>());
    axes
}

fn to_memory(rank: usize) -> Vec<isize> {
    let mut axes = vec![0];
    axes.extend(2..rank as isize);
    axes.push(1);
    axes
}

/// A case array as a Burn tensor of the case's dtype and layout (channels-last: a permuted
/// view, strides and all, as `x.to(memory_format=torch.channels_last)` gives).
fn upload<const D: usize>(
    v: &Value,
    shape: &[usize],
    ext: &Extended,
    device: &Device,
) -> Result<Tensor<D>, String> {
    let values = f64s(v).ok_or("missing array")?;
    let dims = memory_dims(shape, ext.format);
    let data = TensorData::new(values, dims);
    let t = Tensor::<D>::from_data(data.convert::<f32>(), device);
    let t = if ext.format == MemoryFormat::ChannelsLast && D > 2 {
        t.permute(to_logical(D).try_into().expect("rank D"))
    } else {
        t
    };
    Ok(match ext.dtype {
        wgpu_batchnorm::DType::F16 => t.cast(DType::F16),
        _ => t,
    })
}

/// A tensor's values in the case's memory order, as f32.
fn download<const D: usize>(t: Tensor<D>, ext: &Extended) -> Vec<f32> {
    let t = if ext.format == MemoryFormat::ChannelsLast && D > 2 {
        t.permute(to_memory(D).try_into().expect("rank D"))
    } else {
        t
    };
    t.cast(DType::F32)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

fn vec1(t: Tensor<1>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

fn replay(device: &Device, case: &Value, report: &mut CaseReport) -> Result<(), String> {
    let shape = usizes(&case["shape"]).ok_or("no shape")?;
    match shape.len() {
        2 => replay_rank::<2>(device, case, &shape, report),
        3 => replay_rank::<3>(device, case, &shape, report),
        4 => replay_rank::<4>(device, case, &shape, report),
        5 => replay_rank::<5>(device, case, &shape, report),
        r => Err(format!("rank {r}")),
    }
}

fn case_module(device: &Device, case: &Value) -> Result<BatchNorm, String> {
    let c = case["num_features"].as_u64().ok_or("no num_features")? as usize;
    let config = BatchNormConfig::new(c)
        .with_epsilon(case["eps"].as_f64().ok_or("no eps")?)
        .with_momentum(case["momentum"].as_f64())
        .with_affine(case["affine"].as_bool().ok_or("no affine")?)
        .with_track_running_stats(case["track_running_stats"].as_bool().ok_or("no track")?);
    let mut bn = config.try_init(device).map_err(|e| e.to_string())?;
    let param = |key: &str| -> Result<Tensor<1>, String> {
        let v = f32s(&case[key]).ok_or(format!("no {key}"))?;
        Ok(Tensor::from_data(TensorData::new(v, [c]), device))
    };
    if config.affine {
        bn.gamma = Some(burn::module::Param::from_tensor(param("weight")?));
        bn.beta = Some(burn::module::Param::from_tensor(param("bias")?));
    }
    if config.track_running_stats {
        bn.running_mean = Some(burn::module::RunningState::new(param("running_mean_init")?));
        bn.running_var = Some(burn::module::RunningState::new(param("running_var_init")?));
        let nbt = case["num_batches_tracked_init"].as_u64().unwrap_or(0) as f32;
        bn.num_batches_tracked = Some(burn::module::RunningState::new(Tensor::from_data(
            TensorData::new(vec![nbt], [1]),
            device,
        )));
    }
    Ok(bn)
}

fn replay_rank<const D: usize>(
    device: &Device,
    case: &Value,
    shape: &[usize],
    report: &mut CaseReport,
) -> Result<(), String> {
    let ext = Extended::parse(case)?;
    let mut bn = case_module(device, case)?;
    let c = shape[1];
    let steps = case["steps"].as_array().ok_or("no steps")?;
    for (i, step) in steps.iter().enumerate() {
        let training = step["training"].as_bool().ok_or("step without training")?;
        bn.training = burn::module::Param::from_bool(training);
        let x = upload::<D>(&step["input"], shape, &ext, device)?.require_grad();
        let residual = if ext.residual {
            Some(upload::<D>(&step["residual"], shape, &ext, device)?.require_grad())
        } else {
            None
        };
        let y = bn
            .try_forward_residual(x.clone(), residual.clone(), ext.activation)
            .map_err(|e| format!("step {i}: forward failed: {e}"))?;
        report.checks.push(golden::output_check(
            (step, i),
            &download(y.clone(), &ext),
            &ext,
        )?);
        if let (Some(rm), Some(rv)) = (&bn.running_mean, &bn.running_var) {
            let (rm, rv) = (vec1(rm.value_sync()), vec1(rv.value_sync()));
            let count = bn
                .num_batches_tracked
                .as_ref()
                .map(|n| vec1(n.value_sync())[0] as u64);
            golden::push_running_checks(report, (step, i), (&rm, &rv), count, c)?;
        }
        if step["grad_output"].is_null() {
            continue;
        }
        let dy = upload::<D>(&step["grad_output"], shape, &ext, device)?;
        let loss = (y * dy).cast(DType::F32).sum();
        let grads = loss.backward();
        let gx = x
            .grad(&grads)
            .map(|g| download(g, &ext))
            .ok_or("no grad_input")?;
        let allowed = ext.tol.elementwise * golden::step_k(step);
        report.checks.push(golden::gradient_check(
            (step, i),
            "grad_input",
            &gx,
            allowed,
        )?);
        let got = residual
            .as_ref()
            .and_then(|r| r.grad(&grads))
            .map(|g| download(g, &ext));
        golden::push_optional_check(report, (step, i), "grad_residual", got, |got| {
            golden::gradient_check((step, i), "grad_residual", got, ext.tol.elementwise)
        })?;
        let params = [("grad_weight", &bn.gamma), ("grad_bias", &bn.beta)];
        for (field, param) in params {
            let got = param.as_ref().and_then(|p| p.val().grad(&grads)).map(vec1);
            golden::push_param_grad_check(report, (step, i), field, got, &ext)?;
        }
    }
    Ok(())
}
