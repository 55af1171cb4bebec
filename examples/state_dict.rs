//! Replays a PyTorch checkpoint fixture: `cargo run --release --example state_dict --
//! FILE.safetensors EXPECTED.json` (the format of `tests/data/state_dict/README.md`).
//!
//! Builds every batch-norm layer the expected file names (those with running buffers are also
//! found in the checkpoint alone), loads each from the safetensors file (strict), runs the
//! recorded eval and training forwards, and compares outputs and running statistics under the
//! golden tolerances. Prints one line per layer with its worst err/allowed, then
//! `N passed, M failed`; exits non-zero on any failure.

#[path = "../tests/support/golden.rs"]
mod golden;
#[path = "../tests/support/state_dict.rs"]
mod replay;

use wgpu_batchnorm::Context;

fn main() {
    env_logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, expected] = args.as_slice() else {
        eprintln!("usage: state_dict FILE.safetensors EXPECTED.json");
        std::process::exit(2);
    };
    let read = |path: &str| {
        std::fs::read(path).unwrap_or_else(|e| {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(2);
        })
    };
    let (bytes, text) = (read(file), read(expected));
    let expected: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{expected}: {e}");
            std::process::exit(2);
        }
    };
    let ctx = match Context::new() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    println!("adapter: {}", ctx.adapter());
    let reports = match replay::replay(&ctx, &bytes, &expected) {
        Ok(r) => r,
        Err(e) => {
            println!("FAIL {file}: {e}");
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }
    };
    let mut failed = 0;
    for r in &reports {
        println!("{}", r.line());
        if !r.passed() {
            failed += 1;
        }
    }
    println!("{} passed, {failed} failed", reports.len() - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}
