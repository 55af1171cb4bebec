// The bandwidth floor the benchmark compares against: dst = src, one vec4 per invocation.
//
// Bindings: 0 src: array<vec4<f32>> (read), 1 dst: array<vec4<f32>> (write).
// Dispatch: ceil(len / 4 / WG) workgroups of WG invocations, folded into a 2-D grid; the
//           overhang is bounds-checked.

override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if i < arrayLength(&dst) {
        dst[i] = src[i];
    }
}
