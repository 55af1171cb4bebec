//! The crate in a browser: wasm32 + WebGPU, run by `scripts/test-browser.sh` in headless
//! Chromium through wasm-bindgen-test. Each test awaits the crate's async calls, as a page
//! would; the golden replay and the reference checks are the native tests' own code
//! (`support::golden`, `support::checks`), not copies.

#![cfg(target_arch = "wasm32")]

mod support;

use support::checks;
use support::golden::{self, CaseReport};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use wgpu_batchnorm::reference::ReferenceBatchNorm;
use wgpu_batchnorm::{BatchNorm1d, BatchNormOptions, Context, ContextOptions, PassPlan, Tensor};

wasm_bindgen_test_configure!(run_in_browser);

/// Golden cases replayed in the browser: every base case but the 4 MB backward one, and the
/// extended cases of each kind (f16, channels-last, epilogues, residual) but the largest.
/// Embedded so that the test needs no server of its own.
macro_rules! cases {
    ($($dir:literal / $name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("data/", $dir, "/", $name, ".json")))),*]
    };
}
const CASES: &[(&str, &str)] = cases![
    "golden" / "bn1d_nc_eval_single_sample",
    "golden" / "bn1d_nc_n2_minimal",
    "golden" / "errors",
    "golden" / "bn1d_n1_ncl",
    "golden" / "bn1d_nc_momentum_none_eps1e-3",
    "golden" / "bn2d_n1_spatial",
    "golden" / "bn1d_nc_basic",
    "golden" / "bn1d_ncl_mom0.3_eps1e-3",
    "golden" / "bn1d_ncl_no_affine_no_track",
    "golden" / "bn2d_momentum_none",
    "golden" / "bn2d_no_affine",
    "golden" / "bn2d_small_var_eps1e-3",
    "golden" / "bn2d_no_track",
    "golden" / "bn2d_const_channel",
    "golden" / "bn3d_basic",
    "golden" / "bn2d_basic",
    "golden" / "bn2d_large_mean_extreme",
    "golden" / "bn2d_odd_3x7x5x11",
    "golden" / "bn2d_large_mean_moderate",
    "extended" / "ext_cl_bn1d_nc_no_track",
    "extended" / "ext_cl_bn2d_c1",
    "extended" / "ext_resid_identity_bn1d",
    "extended" / "ext_f16_bn1d_nc",
    "extended" / "ext_cl_bn1d_ncl",
    "extended" / "ext_silu_bn1d_ncl",
    "extended" / "ext_f16_cl_silu_bn3d_no_track",
    "extended" / "ext_relu6_bn2d_no_affine",
    "extended" / "ext_leaky_bn3d",
    "extended" / "ext_relu_bn2d",
    "extended" / "ext_f16_bn3d_momentum_none",
    "extended" / "ext_f16_bn2d_large_mean",
    "extended" / "ext_cl_bn3d",
    "extended" / "ext_f16_bn2d_basic",
    "extended" / "ext_f16_resid_relu_bn2d",
    "extended" / "ext_cl_bn2d_odd",
    "extended" / "ext_resid_relu_bn2d",
    "extended" / "ext_f16_cl_resid_relu_bn2d",
];

/// The browser's default adapter, with the limits it offers (what `Context::new_async` asks).
async fn context() -> Context {
    Context::new_async()
        .await
        .expect("a WebGPU adapter (Chromium needs --enable-unsafe-webgpu)")
}

/// A device with exactly WebGPU's default limits and no optional features: what a page gets
/// when it asks for nothing.
async fn default_limits_context(options: &ContextOptions) -> Context {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions::default())
        .await
        .expect("a WebGPU adapter");
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            required_limits: wgpu::Limits::default(),
            ..Default::default()
        })
        .await
        .expect("a device with the default limits");
    Context::from_device_with_options(device, queue, options)
}

fn log(line: &str) {
    web_sys::console::log_1(&line.into());
}

/// Replays [`CASES`] on `ctx`; returns the worst err/allowed, failing on any case that does not
/// pass (a skipped case fails too).
async fn replay(ctx: &Context, label: &str) -> f64 {
    let mut failed: Vec<String> = Vec::new();
    let mut worst: f64 = 0.0;
    for (name, text) in CASES {
        let report: CaseReport = golden::replay_text(ctx, name, text).await;
        log(&format!("[{label}] {}", report.line()));
        if let Some(w) = report.worst() {
            worst = worst.max(w.ratio);
        }
        if !report.passed() {
            failed.push(report.line());
        }
    }
    log(&format!(
        "[{label}] {} golden cases, worst err/allowed {worst:.3e}",
        CASES.len()
    ));
    assert!(
        failed.is_empty(),
        "[{label}] failed:\n{}",
        failed.join("\n")
    );
    worst
}

#[wasm_bindgen_test]
async fn the_adapter_is_webgpu() {
    let ctx = context().await;
    let report = ctx.adapter();
    log(&format!("adapter: {report:?}"));
    assert_eq!(report.backend, wgpu::Backend::BrowserWebGpu);
}

/// The README's quickstart, awaited: `BatchNorm1d(3)` on a (4, 3) input, train then eval.
#[wasm_bindgen_test]
async fn quickstart_train_then_eval() {
    let ctx = context().await;
    let data: Vec<f32> = (1..=12).map(|v| v as f32).collect();
    let mut bn = BatchNorm1d::new(&ctx, 3).unwrap();
    let mut cpu = ReferenceBatchNorm::new(3, BatchNormOptions::default());
    let x = Tensor::from_slice_async(&ctx, &data, &[4, 3])
        .await
        .unwrap();
    for training in [true, false] {
        bn.set_training(training);
        cpu.training = training;
        let y = bn.forward_async(&x).await.unwrap();
        let y = y.to_host_async().await.unwrap();
        let y64 = cpu.forward(&data, &[4, 3]).unwrap();
        let running = bn
            .running_mean_async()
            .await
            .unwrap()
            .zip(bn.running_var_async().await.unwrap());
        let what = format!("quickstart training={training}");
        let ratio = checks::forward_ratio(&what, &y, &y64, running, &cpu);
        log(&format!("{what}: y = {y:?}, worst err/allowed {ratio:.3e}"));
    }
    assert_eq!(bn.num_batches_tracked_async().await.unwrap(), Some(1));
}

/// The public golden cases listed in [`CASES`] on the browser's adapter, then on a device with
/// WebGPU's default limits.
#[wasm_bindgen_test]
async fn golden_cases_pass_in_the_browser() {
    let ctx = context().await;
    replay(&ctx, "browser adapter").await;
}

#[wasm_bindgen_test]
async fn golden_cases_pass_within_default_limits() {
    let ctx = default_limits_context(&ContextOptions::default()).await;
    replay(&ctx, "default limits").await;
}

/// The GPU profile's plans (runs of 32, the floor of invocations) on the browser's adapter.
#[wasm_bindgen_test]
async fn golden_cases_pass_on_the_gpu_profile() {
    let gpu = ContextOptions {
        profile: Some(wgpu_batchnorm::profile::ProfileKind::Gpu),
        ..Default::default()
    };
    let ctx = default_limits_context(&gpu).await;
    replay(&ctx, "gpu profile").await;
}

/// Training forward, eval forward and both backwards against the f64 reference on shapes that
/// are not powers of two, one per walk, in binding windows, and on every training-forward
/// path.
#[wasm_bindgen_test]
async fn forward_and_backward_match_the_reference() {
    let windowed = ContextOptions {
        max_binding_window: Some(4096),
        ..Default::default()
    };
    let forced = |path| ContextOptions {
        forced: wgpu_batchnorm::testing::Forced {
            pass_plan: Some(path),
            ..Default::default()
        },
        ..Default::default()
    };
    let contexts = [
        ("browser adapter", context().await),
        (
            "default limits",
            default_limits_context(&ContextOptions::default()).await,
        ),
        ("4 KiB windows", default_limits_context(&windowed).await),
        (
            "one workgroup per channel",
            default_limits_context(&forced(PassPlan::WorkgroupPerChannel)).await,
        ),
        (
            "one invocation per channel",
            default_limits_context(&forced(PassPlan::InvocationPerChannel)).await,
        ),
        (
            "multi-pass",
            default_limits_context(&forced(PassPlan::MultiPass)).await,
        ),
        (
            "gpu profile",
            default_limits_context(&ContextOptions {
                profile: Some(wgpu_batchnorm::profile::ProfileKind::Gpu),
                ..Default::default()
            })
            .await,
        ),
    ];
    for (label, ctx) in &contexts {
        let mut worst: f64 = 0.0;
        for (i, shape) in [
            vec![4, 3],
            vec![37, 5],
            vec![3, 7, 13],
            vec![5, 6, 7, 7],
            vec![2, 3, 33, 31],
            vec![2, 4, 3, 5, 7],
            vec![3, 40, 7, 7],
            vec![50, 130],
        ]
        .iter()
        .enumerate()
        {
            worst =
                worst.max(checks::check_forward_backward_async(ctx, shape, 90 + i as u64).await);
        }
        log(&format!(
            "[{label}] reference checks worst err/allowed {worst:.3e}"
        ));
    }
}
