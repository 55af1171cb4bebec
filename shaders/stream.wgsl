// The benchmark's second floor: y = x through the walk the tensor kernels use (walk.wgsl),
// with their item width, windows and grids; the host runs it over a tensor's bytes as one long
// plane, the walk's fastest case. It reads every element once and writes it once with no
// arithmetic, so a kernel's ratio to it is what its arithmetic and extra passes cost over the
// crate's own best access pattern (the plain vec4 copy in copy.wgsl is slower than this
// pattern on some adapters, lavapipe among them).
//
// Computes: y = x, elementwise.
// Bindings: `StreamBindings` in src/ops/stream.rs: geo (Block), x (read) and y (written),
//           the block's windows.
// Dispatch: one per block; workgroups per `WalkGeometry::workgroups`, folded into a 2-D grid.

@compute @workgroup_size(WG)
fn main(cell: Cell) {
    let s = span_start(cell.lid, cell.wid, cell.nwg);
    var at = s.start;
    for (var i = 0u; i < s.count; i++) {
        store_y(at, load_x(at));
        at += s.stride;
    }
}
