//! Every pass plan of the training forward and backward (`PassPlan`: the multi-pass walks, one
//! workgroup per channel, one invocation per channel) on each reduction path, against the f64
//! reference and the PyTorch-made golden cases (f16, channels-last, fused epilogues included,
//! whose backward falls back to the multi-pass plan), and the planner's choice per shape.

mod support;

use std::path::Path;
use wgpu_batchnorm::testing::Probes;

use support::checks::check_forward_backward;
use support::golden;
use wgpu_batchnorm::{Context, ContextOptions, PassPlan};

fn context(path: PassPlan, disable_subgroups: bool) -> Context {
    Context::with_options(ContextOptions {
        forced: wgpu_batchnorm::testing::Forced {
            pass_plan: Some(path),
            ..Default::default()
        },
        disable_subgroups,
        ..ContextOptions::from_env()
    })
    .expect("a GPU adapter")
}

/// Shapes with planes of 1 to 300 values, channel counts that are not powers of two, N = 1,
/// channels longer than one workgroup's invocations, and (N, C) (with C a multiple of 4: vec4
/// items across channels in the single-dispatch plans).
const SHAPES: &[&[usize]] = &[
    &[4, 3],
    &[300, 7],
    &[2, 130],
    &[6, 20],
    &[300, 8],
    &[5, 6, 7, 7],
    &[1, 9, 300],
    &[3, 33, 14, 14],
    &[2, 4, 3, 5, 7],
    &[700, 5, 3],
];

#[test]
fn every_pass_plan_matches_the_reference() {
    for path in PassPlan::ALL {
        for disable_subgroups in [false, true] {
            let ctx = context(path, disable_subgroups);
            let mut worst: f64 = 0.0;
            for (seed, shape) in SHAPES.iter().enumerate() {
                let planned = ctx.planned_pass_plan(shape).unwrap();
                assert_eq!(planned, path, "{shape:?} forced to {path:?}");
                worst = worst.max(check_forward_backward(&ctx, shape, 900 + seed as u64));
            }
            println!(
                "{path:?} (subgroups off: {disable_subgroups}): worst err/allowed {worst:.3e}"
            );
        }
    }
}

#[test]
fn every_pass_plan_passes_the_golden_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut files = golden::collect(&root.join("golden"));
    files.extend(golden::collect(&root.join("extended")));
    let f16_words = |path| {
        Context::with_options(ContextOptions {
            forced: wgpu_batchnorm::testing::Forced {
                pass_plan: Some(path),
                ..Default::default()
            },
            disable_f16: true,
            ..ContextOptions::from_env()
        })
        .expect("a GPU adapter")
    };
    for path in PassPlan::ALL {
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

fn context_with_profile(kind: wgpu_batchnorm::profile::ProfileKind) -> wgpu_batchnorm::Context {
    let mut options = wgpu_batchnorm::ContextOptions::from_env();
    options.profile = Some(kind);
    wgpu_batchnorm::Context::with_options(options).unwrap()
}

/// The CPU profile's planner: one invocation per channel for many short channels, the
/// multi-pass walks otherwise.
#[test]
fn the_cpu_planner_picks_one_invocation_per_channel_for_many_short_channels() {
    let ctx = context_with_profile(wgpu_batchnorm::profile::ProfileKind::Cpu);
    let cases: &[(&[usize], PassPlan)] = &[
        (&[256, 1024], PassPlan::InvocationPerChannel),
        (&[1024, 128], PassPlan::InvocationPerChannel),
        (&[4, 2048, 7, 7], PassPlan::InvocationPerChannel),
        (&[1025, 128], PassPlan::MultiPass),
        (&[256, 127], PassPlan::MultiPass),
        (&[21, 2048, 7, 7], PassPlan::MultiPass),
        (&[64, 256, 14, 14], PassPlan::MultiPass),
        (&[32, 64, 56, 56], PassPlan::MultiPass),
        (&[16, 3, 224, 224], PassPlan::MultiPass),
        (&[4, 3], PassPlan::MultiPass),
    ];
    for &(shape, path) in cases {
        assert_eq!(ctx.planned_pass_plan(shape), Some(path), "{shape:?}");
    }
}

/// The GPU profile's planner: never an invocation per channel; a workgroup per channel where
/// the channels alone launch its floor of invocations over planes of more than one value.
#[test]
fn the_gpu_planner_never_gives_an_invocation_a_channel() {
    let ctx = context_with_profile(wgpu_batchnorm::profile::ProfileKind::Gpu);
    let cases: &[(&[usize], PassPlan)] = &[
        (&[256, 1024], PassPlan::MultiPass),
        (&[1024, 128], PassPlan::MultiPass),
        (&[4, 2048, 7, 7], PassPlan::WorkgroupPerChannel),
        (&[21, 2048, 7, 7], PassPlan::WorkgroupPerChannel),
        (&[64, 256, 14, 14], PassPlan::WorkgroupPerChannel),
        (&[32, 64, 56, 56], PassPlan::MultiPass),
        (&[16, 3, 224, 224], PassPlan::MultiPass),
        (&[4, 3], PassPlan::MultiPass),
    ];
    for &(shape, path) in cases {
        assert_eq!(ctx.planned_pass_plan(shape), Some(path), "{shape:?}");
    }
}
