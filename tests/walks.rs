//! Every walk on every tensor kernel, each item width and each reduction path, against the f64
//! reference: training forward (stats, finalize_stats, normalize, update_running), backward
//! (backward_reduce, backward_finalize, backward_input), then the same in eval mode. Each case
//! is named by its walk, item width and reduction path, and checks that the planner really
//! used that walk.

mod support;

use support::checks::check_forward_backward;
use wgpu_batchnorm::testing::Probes;
use wgpu_batchnorm::Walk;

/// Shapes every walk can serve (planes of at most 128 items, so the runs walk fits), with
/// planes of a multiple of 4 values (vec4 items) and not (scalar items), and N = 1.
const SHAPES: &[(&str, &[usize])] = &[
    ("vec4", &[6, 5, 4, 12]),
    ("vec4", &[3, 7, 100]),
    ("scalar", &[6, 5, 7, 9]),
    ("scalar", &[37, 3, 5]),
    ("scalar", &[1, 4, 3, 3, 3]),
    ("scalar", &[300, 6]),
];

fn run(walk: Walk, disable_subgroups: bool) {
    let ctx = support::context_with_walk(walk, disable_subgroups);
    let path = if ctx.adapter().subgroups {
        "subgroups"
    } else {
        "workgroup memory"
    };
    for (seed, (item, shape)) in SHAPES.iter().enumerate() {
        assert_eq!(
            ctx.planned_walk(shape),
            Some(walk),
            "{shape:?} does not run on the {walk:?} walk"
        );
        let worst = check_forward_backward(&ctx, shape, 700 + seed as u64);
        println!("{walk:?} walk, {item} items, {path}: {shape:?} worst err/allowed {worst:.3}");
    }
}

#[test]
fn planes_walk_on_every_kernel_and_reduction_path() {
    run(Walk::Planes, false);
    run(Walk::Planes, true);
}

#[test]
fn runs_walk_on_every_kernel_and_reduction_path() {
    run(Walk::Runs, false);
    run(Walk::Runs, true);
}

#[test]
fn columns_walk_on_every_kernel_and_reduction_path() {
    run(Walk::Columns, false);
    run(Walk::Columns, true);
}

#[test]
fn the_default_walk_follows_the_plane_length() {
    let ctx = support::context();
    assert_eq!(ctx.planned_walk(&[32, 64, 56, 56]), Some(Walk::Planes));
    // 14x14 planes: 49 vec4 items, the runs walk.
    assert_eq!(ctx.planned_walk(&[64, 256, 14, 14]), Some(Walk::Runs));
    // 7x7 planes: 49 scalar items, the runs walk too.
    assert_eq!(ctx.planned_walk(&[4, 2048, 7, 7]), Some(Walk::Runs));
    assert_eq!(ctx.planned_walk(&[256, 1024]), Some(Walk::Columns));
    assert_eq!(ctx.planned_walk(&[8, 16, 3, 2]), Some(Walk::Columns));
}
