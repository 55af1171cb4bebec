//! Tensors larger than one storage binding (processed in windows) and dispatches larger than
//! one grid dimension (folded into 2-D grids). The limits the crate plans with are lowered
//! through `ContextOptions`, so small tensors exercise every mechanism cheaply; one real
//! tensor over 128 MiB runs in an ignored test (CI runs it in release mode).

mod support;

use support::checks::check_forward_backward;
use wgpu_batchnorm::testing::Probes;
use wgpu_batchnorm::{Context, ContextOptions};

fn lowered(disable_subgroups: bool) -> Context {
    let options = ContextOptions {
        // 16 KiB windows: every shape below needs several.
        max_binding_window: Some(16 << 10),
        // At most 7 workgroups along x: every dispatch folds into a 2-D grid.
        max_workgroups_per_dimension: Some(7),
        disable_subgroups,
        ..ContextOptions::from_env()
    };
    Context::with_options(options).expect("a GPU adapter")
}

#[test]
fn windows_and_folded_grids_match_the_reference() {
    let shapes: &[&[usize]] = &[
        &[64, 8, 9, 9],   // windows of whole rows, planes walk, scalar items
        &[40, 5, 12, 12], // windows of whole rows, runs walk, vec4 items
        &[6, 3, 40, 40],  // a row is larger than a window: windows of whole planes
        &[2, 2, 9000],    // a plane is larger than a window: pieces of one plane
        &[2, 3, 4, 2500], // pieces of one plane, vec4 items
        &[700, 10],       // (N, C) in windows of rows, columns walk
        &[3, 7, 5, 11],   // fits one window, folded grid only
    ];
    for disable_subgroups in [false, true] {
        let ctx = lowered(disable_subgroups);
        let mut worst: f64 = 0.0;
        assert_eq!(
            ctx.planned_walk(shapes[0]),
            Some(wgpu_batchnorm::Walk::Planes)
        );
        assert_eq!(
            ctx.planned_walk(shapes[1]),
            Some(wgpu_batchnorm::Walk::Runs)
        );
        assert_eq!(
            ctx.planned_walk(shapes[5]),
            Some(wgpu_batchnorm::Walk::Columns)
        );
        for (i, shape) in shapes.iter().enumerate() {
            worst = worst.max(check_forward_backward(&ctx, shape, 40 + i as u64));
        }
        println!(
            "subgroups {}: worst err/allowed {worst:.3e}",
            ctx.adapter().subgroups
        );
    }
}

#[test]
#[ignore = "allocates ~1.5 GB and takes tens of seconds; CI runs it in release mode"]
fn a_tensor_over_128_mib_matches_the_reference() {
    // 16 x 64 x 256 x 256 f32 = 256 MiB: twice lavapipe's 128 MiB binding limit.
    let ctx = support::context();
    let r = check_forward_backward(&ctx, &[16, 64, 256, 256], 7);
    println!("[16, 64, 256, 256]: worst err/allowed {r:.3e}");
}
