// forward_single.wgsl's ending without the running update: each channel's M2 is kept for the
// separate update dispatch (update_running.wgsl). Assembled after forward_single.wgsl as the
// kernel `forward_single`.

fn channel_done(ch: u32, total: vec4<f32>) {
    m2[ch] = total.z;
}

fn dispatch_done() {}
