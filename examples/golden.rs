//! Replays PyTorch-made golden cases against the crate.
//!
//! `cargo run --release --example golden -- PATH...` where each PATH is a case file or a folder
//! of `*.json` cases (an `errors.json` of probes counts as one case). Prints one line per case
//! with its worst error/allowed ratio (SKIP for a case it cannot replay, with the reason), then
//! `N passed, M failed`; exits non-zero if any failed or was skipped.
//! Backend and adapter: `WGPU_BACKEND`, `WGPU_ADAPTER_NAME`.

#[path = "../tests/support/golden.rs"]
mod golden;

use std::path::PathBuf;

use wgpu_batchnorm::Context;

fn main() {
    env_logger::init();
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() {
        eprintln!("usage: golden PATH... (case files or folders of *.json cases)");
        std::process::exit(2);
    }
    let ctx = match Context::new() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    println!("adapter: {}", ctx.adapter());
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut worst: f64 = 0.0;
    let mut by_field: std::collections::BTreeMap<&'static str, f64> = Default::default();
    for path in &paths {
        let files = golden::collect(path);
        if files.is_empty() {
            println!("FAIL {}: no *.json files", path.display());
            failed += 1;
        }
        for file in files {
            let report = golden::replay_file(&ctx, &file);
            println!("{}", report.line());
            if let Some(w) = report.worst() {
                worst = worst.max(w.ratio);
            }
            for check in &report.checks {
                let entry = by_field.entry(check.field).or_insert(0.0);
                *entry = entry.max(check.ratio);
            }
            if report.skipped.is_some() {
                skipped += 1;
            } else if report.passed() {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    let fields: Vec<String> = by_field
        .iter()
        .map(|(field, r)| format!("{field} {r:.3e}"))
        .collect();
    println!("worst err/allowed by field: {}", fields.join(", "));
    println!("worst err/allowed over all checks: {worst:.3e}");
    if skipped > 0 {
        println!("{skipped} skipped (never counted as passed)");
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 || skipped > 0 {
        std::process::exit(1);
    }
}
