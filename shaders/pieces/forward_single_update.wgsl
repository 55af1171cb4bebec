// forward_single.wgsl's ending with the running update in the same dispatch (the kernel
// `forward_single_update`): the invocation that finishes a channel updates that channel's
// running statistics, exactly once per channel, as update_running.wgsl would from the same
// save_mean and M2 (the same f32 operations, so the same bits); invocation 0 of the grid adds
// one to num_batches_tracked. Only with a momentum: the cumulative average's factor needs the
// count after the increment in every channel, which one dispatch of many workgroups cannot
// order, so momentum None keeps the separate update. Adapters with fewer than 10 storage
// buffers per stage (WebGPU's default is 8) keep it too.
//
// Bindings (besides forward_single.wgsl's, without m2): upd (Update), running_mean and
//           running_var (read-write, C entries), tracked? (num_batches_tracked as two u32
//           words, low then high, atomic).

fn channel_done(ch: u32, total: vec4<f32>) {
    let r = running_step(
        upd.momentum,
        running_dof(upd),
        total.y,
        total.z,
        vec2<f32>(running_mean[ch], running_var[ch]),
    );
    running_mean[ch] = r.x;
    running_var[ch] = r.y;
}

// The 64-bit count's increment: the low word's atomic add, and its carry into the high word.
fn dispatch_done() {
    if HAS_TRACKED {
        if atomicAdd(&tracked[0], 1u) == 0xffffffffu {
            atomicAdd(&tracked[1], 1u);
        }
    }
}
