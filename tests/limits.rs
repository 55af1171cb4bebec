//! The crate within WebGPU's default limits, natively: a device requested with exactly
//! `wgpu::Limits::default()` (256 invocations per workgroup, 16 KiB of workgroup storage, 8
//! storage buffers per stage, 128 MiB bindings, 256-byte storage offsets) and no optional
//! features, which is what a browser grants a page that asks for nothing. `tests/web.rs` runs
//! the same checks in Chromium.

mod support;

use std::path::Path;

use support::{checks, golden};
use wgpu_batchnorm::{Context, ContextOptions, PassPlan};

fn default_limits_device() -> (wgpu::Device, wgpu::Queue) {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .expect("an adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: wgpu::Limits::default(),
        required_features: wgpu::Features::empty(),
        ..Default::default()
    }))
    .expect("a device with the default limits");
    let limits = device.limits();
    assert_eq!(limits.max_compute_invocations_per_workgroup, 256);
    assert_eq!(limits.max_compute_workgroup_storage_size, 16 << 10);
    assert_eq!(limits.max_storage_buffers_per_shader_stage, 8);
    assert_eq!(limits.max_storage_buffer_binding_size, 128 << 20);
    assert_eq!(limits.min_storage_buffer_offset_alignment, 256);
    (device, queue)
}

fn default_limits_context(options: &ContextOptions) -> Context {
    let (device, queue) = default_limits_device();
    Context::from_device_with_options(device, queue, options)
}

/// Every public golden and extended case (f16 through u32 words, since no SHADER_F16 was
/// requested; channels-last; epilogues) passes on the default-limits device.
#[test]
fn golden_cases_pass_within_default_limits() {
    let ctx = default_limits_context(&ContextOptions::default());
    assert!(!ctx.adapter().shader_f16 && !ctx.adapter().subgroups);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut files = golden::collect(&root.join("golden"));
    files.extend(golden::collect(&root.join("extended")));
    assert!(files.len() >= 40, "golden cases missing: {files:?}");
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
        "default limits: {} cases, worst err/allowed {worst:.3e}",
        files.len()
    );
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
}

/// Training and eval forward and backward against the f64 reference, on every walk's shapes,
/// in whole bindings, in 4 KiB windows and on the one-invocation-per-channel plan.
#[test]
fn forward_and_backward_match_the_reference_within_default_limits() {
    let windowed = ContextOptions {
        max_binding_window: Some(4096),
        ..Default::default()
    };
    // One invocation per channel within 8 storage buffers: the running update stays its own
    // dispatch (the fused kernel needs 10).
    let single = ContextOptions {
        forced: wgpu_batchnorm::testing::Forced {
            pass_plan: Some(PassPlan::InvocationPerChannel),
            ..Default::default()
        },
        ..Default::default()
    };
    for options in [ContextOptions::default(), windowed, single] {
        let ctx = default_limits_context(&options);
        for (i, shape) in [
            vec![4, 3],
            vec![37, 5],
            vec![3, 7, 13],
            vec![5, 6, 7, 7],
            vec![2, 3, 33, 31],
            vec![2, 4, 3, 5, 7],
        ]
        .iter()
        .enumerate()
        {
            checks::check_forward_backward(&ctx, shape, 190 + i as u64);
        }
    }
}

/// A tensor larger than the default 128 MiB binding (144 MiB, inside the default 256 MiB
/// buffer): processed in windows. Slow on a software adapter, so ignored by default; CI runs
/// it.
#[test]
#[ignore]
fn a_tensor_beyond_the_default_binding_size() {
    let ctx = default_limits_context(&ContextOptions::default());
    let worst = checks::check_forward_backward(&ctx, &[2, 3, 6_000_000], 7);
    println!("144 MiB within default limits: worst err/allowed {worst:.3e}");
}
