//! Replays every PyTorch-made golden case in `tests/data/golden` (forward outputs, running
//! statistics, num_batches_tracked and the error probes) on both reduction paths.

mod support;

use std::path::Path;

use support::golden;

fn replay_all(ctx: &wgpu_batchnorm::Context, label: &str) {
    let files = golden::collect(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/golden"
    )));
    assert!(files.len() >= 20, "golden cases missing: {files:?}");
    let mut failed = Vec::new();
    let mut worst: f64 = 0.0;
    for file in &files {
        let report = golden::replay_file(ctx, file);
        println!("[{label}] {}", report.line());
        if let Some(w) = report.worst() {
            worst = worst.max(w.ratio);
        }
        if !report.passed() {
            failed.push(report.line());
        }
    }
    println!("[{label}] worst err/allowed {worst:.3e}");
    assert!(
        failed.is_empty(),
        "[{label}] failed cases:\n{}",
        failed.join("\n")
    );
}

#[test]
fn golden_cases_pass_on_every_reduction_path() {
    for (label, ctx) in support::contexts() {
        replay_all(&ctx, label);
    }
}

#[test]
fn golden_checks_are_not_vacuous() {
    // A deliberately wrong module must fail the same replay: here the data are replayed with
    // a different eps, which moves every output far beyond the tolerance.
    let ctx = support::context();
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/golden/bn2d_small_var_eps1e-3.json"
    ));
    let text = std::fs::read_to_string(path).unwrap();
    let tampered = text.replacen("\"eps\": 0.001", "\"eps\": 0.002", 1);
    assert_ne!(text, tampered);
    let dir = std::env::temp_dir().join(format!("wgpu-bn-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tampered.json");
    std::fs::write(&file, tampered).unwrap();
    let report = golden::replay_file(&ctx, &file);
    std::fs::remove_dir_all(&dir).ok();
    assert!(!report.passed(), "a wrong eps passed: {}", report.line());
}
