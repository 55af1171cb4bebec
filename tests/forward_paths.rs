//! Every path of the training forward (`ForwardPath`: the multi-pass walks, one workgroup per
//! channel, one invocation per channel) on each reduction path, against the f64 reference and
//! the PyTorch-made golden cases (f16, channels-last, fused epilogues included), and the
//! planner's choice per shape.

mod support;

use std::path::Path;

use support::checks::check_forward_backward;
use support::golden;
use wgpu_batchnorm::{Context, ContextOptions, ForwardPath};

fn context(path: ForwardPath, disable_subgroups: bool) -> Context {
    Context::with_options(ContextOptions {
        force_forward: Some(path),
        disable_subgroups,
        ..ContextOptions::from_env()
    })
    .expect("a GPU adapter")
}

/// Shapes with planes of 1 to 300 values, channel counts that are not powers of two, N = 1,
/// channels longer than one workgroup's invocations, and (N, C).
const SHAPES: &[&[usize]] = &[
    &[4, 3],
    &[300, 7],
    &[2, 130],
    &[5, 6, 7, 7],
    &[1, 9, 300],
    &[3, 33, 14, 14],
    &[2, 4, 3, 5, 7],
    &[700, 5, 3],
];

#[test]
fn every_forward_path_matches_the_reference() {
    for path in ForwardPath::ALL {
        for disable_subgroups in [false, true] {
            let ctx = context(path, disable_subgroups);
            let mut worst: f64 = 0.0;
            for (seed, shape) in SHAPES.iter().enumerate() {
                let planned = ctx.planned_forward(shape).unwrap();
                // One invocation per channel needs one value per row and channel; other shapes
                // fall back to one workgroup per channel.
                let expected = match path {
                    ForwardPath::InvocationPerChannel if shape.len() > 2 => {
                        ForwardPath::WorkgroupPerChannel
                    }
                    p => p,
                };
                assert_eq!(planned, expected, "{shape:?} forced to {path:?}");
                worst = worst.max(check_forward_backward(&ctx, shape, 900 + seed as u64));
            }
            println!(
                "{path:?} (subgroups off: {disable_subgroups}): worst err/allowed {worst:.3e}"
            );
        }
    }
}

#[test]
fn every_forward_path_passes_the_golden_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut files = golden::collect(&root.join("golden"));
    files.extend(golden::collect(&root.join("extended")));
    let f16_words = |path| {
        Context::with_options(ContextOptions {
            force_forward: Some(path),
            disable_f16: true,
            ..ContextOptions::from_env()
        })
        .expect("a GPU adapter")
    };
    for path in ForwardPath::ALL {
        for (label, ctx) in [
            ("default", context(path, false)),
            ("workgroup memory", context(path, true)),
            ("f16 as u32 words", f16_words(path)),
        ] {
            let mut failed = Vec::new();
            let mut worst: f64 = 0.0;
            for file in &files {
                let report = golden::replay_file(&ctx, file);
                if let Some(w) = report.worst() {
                    worst = worst.max(w.ratio);
                }
                if !report.passed() {
                    failed.push(report.line());
                }
            }
            println!(
                "{path:?} {label}: {} cases, worst err/allowed {worst:.3e}",
                files.len()
            );
            assert!(
                failed.is_empty(),
                "{path:?} {label}:\n{}",
                failed.join("\n")
            );
        }
    }
}

/// The default planner: one invocation per channel for many channels of few rows, the
/// multi-pass walks otherwise.
#[test]
fn the_planner_picks_one_invocation_per_channel_for_many_short_columns() {
    let ctx = support::context();
    let cases: &[(&[usize], ForwardPath)] = &[
        (&[256, 1024], ForwardPath::InvocationPerChannel),
        (&[1024, 128], ForwardPath::InvocationPerChannel),
        (&[1025, 128], ForwardPath::MultiPass),
        (&[256, 127], ForwardPath::MultiPass),
        (&[4, 2048, 7, 7], ForwardPath::MultiPass),
        (&[64, 256, 14, 14], ForwardPath::MultiPass),
        (&[32, 64, 56, 56], ForwardPath::MultiPass),
        (&[16, 3, 224, 224], ForwardPath::MultiPass),
        (&[4, 3], ForwardPath::MultiPass),
    ];
    for &(shape, path) in cases {
        assert_eq!(ctx.planned_forward(shape), Some(path), "{shape:?}");
    }
}
