//! Where a device keeps what the op layer compiles for it. The device layer only stores it, so
//! that every module, tensor and thread on one device shares one copy; `ops::pipelines` builds
//! and reads it (the device layer knows no kernel).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// The per-kernel layouts (built once, on first use) and the compiled pipelines, keyed by the
/// op layer's packed variant key.
#[derive(Default)]
pub(crate) struct Compiled {
    pub layouts: OnceLock<Layouts>,
    pub pipelines: Mutex<HashMap<u128, wgpu::ComputePipeline>>,
}

/// Bind-group and pipeline layouts per kernel (by the op layer's kernel index; None where the
/// device allows fewer storage buffers per stage than the kernel binds), and what an absent
/// optional binding binds.
pub(crate) struct Layouts {
    pub bind_groups: Vec<Option<wgpu::BindGroupLayout>>,
    pub pipelines: Vec<Option<wgpu::PipelineLayout>>,
    /// Bound where an optional binding is absent (never accessed: its `HAS_` constant is
    /// false): one range shared by the read-only bindings, and for the read-write ones a
    /// range per binding index (at the device's offset alignment), since WebGPU forbids a
    /// dispatch to use a buffer both ways or two writable bindings over one range.
    pub unbound_read: wgpu::Buffer,
    pub unbound_write: wgpu::Buffer,
    pub unbound_stride: u64,
}

impl Compiled {
    /// How many pipelines have been compiled.
    pub fn created(&self) -> usize {
        self.pipelines.lock().map(|p| p.len()).unwrap_or(0)
    }
}
