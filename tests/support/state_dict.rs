//! Replays a checkpoint fixture (schema: `tests/data/state_dict/README.md`): builds every
//! batch-norm layer, loads it from the safetensors file, runs the recorded eval and training
//! forwards and compares them under the golden tolerances. Shared by `tests/state_dict.rs` and
//! `examples/state_dict.rs` (included with `#[path]`).

#![allow(dead_code)]

use serde_json::Value;
use wgpu_batchnorm::state_dict::{list_layers, load};
use wgpu_batchnorm::{BatchNorm, BatchNormOptions, Context, Flavor, Tensor};

use super::golden::{f32s, f64s, per_channel_ratio, rel_l2_ratio, TOL};

/// One layer's result: the worst err/allowed and where, and failures.
#[derive(Debug, Default)]
pub struct LayerReport {
    pub prefix: String,
    pub worst: f64,
    pub worst_field: String,
    pub failures: Vec<String>,
}

impl LayerReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.worst <= 1.0
    }

    pub fn line(&self) -> String {
        let mut s = format!(
            "{} {:<26} worst err/allowed {:.3e} ({})",
            if self.passed() { "PASS" } else { "FAIL" },
            self.prefix,
            self.worst,
            self.worst_field
        );
        if !self.failures.is_empty() {
            s += &format!("; FAILURES: {}", self.failures.join("; "));
        }
        s
    }

    fn check(&mut self, field: &str, ratio: f64) {
        if ratio > self.worst || self.worst_field.is_empty() {
            self.worst = self.worst.max(ratio);
            self.worst_field = field.to_string();
        }
    }
}

fn flavor(module: &str) -> Option<Flavor> {
    match module {
        "BatchNorm1d" => Some(Flavor::OneD),
        "BatchNorm2d" => Some(Flavor::TwoD),
        "BatchNorm3d" => Some(Flavor::ThreeD),
        _ => None,
    }
}

/// Every layer of `expected` replayed from `file`.
pub fn replay(ctx: &Context, file: &[u8], expected: &Value) -> Result<Vec<LayerReport>, String> {
    let listed = list_layers(file).map_err(|e| e.to_string())?;
    let layers = expected["layers"].as_array().ok_or("no layers")?;
    let mut reports = Vec::new();
    for layer in layers {
        let mut report = LayerReport {
            prefix: layer["prefix"].as_str().unwrap_or("?").to_string(),
            ..Default::default()
        };
        if let Err(e) = replay_layer(ctx, file, layer, &listed, &mut report) {
            report.failures.push(e);
        }
        reports.push(report);
    }
    Ok(reports)
}

fn replay_layer(
    ctx: &Context,
    file: &[u8],
    layer: &Value,
    listed: &[wgpu_batchnorm::state_dict::LayerInfo],
    report: &mut LayerReport,
) -> Result<(), String> {
    let err = |e: wgpu_batchnorm::Error| e.to_string();
    let prefix = report.prefix.clone();
    let c = layer["num_features"].as_u64().ok_or("no num_features")? as usize;
    let options = BatchNormOptions {
        eps: layer["eps"].as_f64().ok_or("no eps")?,
        momentum: layer["momentum"].as_f64(),
        affine: layer["affine"].as_bool().ok_or("no affine")?,
        track_running_stats: layer["track_running_stats"].as_bool().ok_or("no track")?,
    };
    // Layers with running buffers are found in the file alone, with their channel count and
    // affine-ness; the others only by name (as the fixture's README says).
    match listed.iter().find(|l| l.prefix == prefix) {
        Some(l) if (l.num_features, l.affine, l.tracked) != (c, options.affine, true) => {
            return Err(format!("listed as {l:?}"));
        }
        None if options.track_running_stats => return Err("not listed".into()),
        _ => {}
    }
    let module = flavor(layer["module"].as_str().unwrap_or("")).ok_or("unknown module")?;
    let shape: Vec<usize> = layer["input_shape"]
        .as_array()
        .ok_or("no input_shape")?
        .iter()
        .map(|d| d.as_u64().unwrap_or(0) as usize)
        .collect();
    let input = f32s(&layer["input"]).ok_or("no input")?;
    for (mode, training) in [("eval", false), ("train", true)] {
        let step = &layer[mode];
        // A fresh load for each mode, strict like load_state_dict.
        let mut bn = BatchNorm::new(ctx, module, c, options).map_err(err)?;
        load(&mut bn, file, &prefix, true).map_err(err)?;
        bn.set_training(training);
        let x = Tensor::from_slice(ctx, &input, &shape).map_err(err)?;
        let y = bn.forward(&x).map_err(err)?.to_host().map_err(err)?;
        let kappa = step["kappa"].as_f64().unwrap_or(0.0);
        let y64 = f64s(&step["output_f64"]).ok_or("no output_f64")?;
        report.check(
            &format!("{mode} output"),
            rel_l2_ratio(&y, &y64, 1.0 + kappa / 30.0),
        );
        if training && options.track_running_stats {
            let kappa_c = f64s(&step["kappa_per_channel"]).unwrap_or_else(|| vec![kappa; c]);
            let rm64 = f64s(&step["running_mean_f64"]).ok_or("no running_mean_f64")?;
            let rv64 = f64s(&step["running_var_f64"]).ok_or("no running_var_f64")?;
            let rm = bn.running_mean().map_err(err)?.unwrap_or_default();
            let rv = bn.running_var().map_err(err)?.unwrap_or_default();
            report.check(
                "running_mean",
                per_channel_ratio(&rm, &rm64, |ch| TOL * (rm64[ch].abs() + rv64[ch].sqrt())),
            );
            report.check(
                "running_var",
                per_channel_ratio(&rv, &rv64, |ch| TOL * (1.0 + kappa_c[ch] / 30.0) * rv64[ch]),
            );
            let want = step["num_batches_tracked"].as_u64();
            let got = bn.num_batches_tracked().map_err(err)?;
            if got != want {
                report
                    .failures
                    .push(format!("num_batches_tracked {got:?}, expected {want:?}"));
            }
        }
    }
    Ok(())
}
