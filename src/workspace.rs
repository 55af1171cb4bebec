//! Per-module GPU scratch space and caches: the params buffer and plan of each shape, the
//! Welford / gradient partials, and bind groups. Built once per shape and tensor set, then reused,
//! so steady-state calls allocate no GPU objects.

use std::collections::HashMap;

use wgpu::util::DeviceExt;

use crate::context::Context;
use crate::kernels::{BindCache, Binding, Kernel, Params, Plan};

/// Everything that fixes a params buffer's contents and the plan.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct ParamsKey {
    pub n: u32,
    pub c: u32,
    pub s: u32,
    /// Whether the bound tensors allow vec4 reads (16-byte aligned offsets).
    pub vec4_ok: bool,
    /// eps as f32 bits.
    pub eps: u32,
    /// momentum as f32 bits; None is the cumulative average.
    pub momentum: Option<u32>,
}

impl ParamsKey {
    /// An empty input has no plan: nothing is read or written but num_batches_tracked.
    pub fn is_empty(&self) -> bool {
        u64::from(self.n) * u64::from(self.c) * u64::from(self.s) == 0
    }
}

/// Params buffers (immutable once created) and the plan they describe (None when empty):
/// one per block, and `channel` for the per-channel passes (the first block's, or the empty
/// batch's).
#[derive(Clone)]
pub(crate) struct Prepared {
    pub plan: Option<Plan>,
    pub blocks: Vec<Binding>,
    pub channel: Binding,
}

pub(crate) struct Workspace {
    ctx: Context,
    prepared: HashMap<ParamsKey, Prepared>,
    partials: Option<wgpu::Buffer>,
    /// Per-channel buffers by purpose, grown to the largest channel count seen.
    channel_scratch: HashMap<&'static str, wgpu::Buffer>,
    binds: BindCache,
    /// GPU buffers this workspace has created (params, partials, scratch).
    buffers_created: usize,
}

/// At most this many shapes keep their params buffer; a full cache starts over.
const MAX_PREPARED: usize = 64;

impl Workspace {
    pub fn new(ctx: &Context) -> Self {
        Workspace {
            ctx: ctx.clone(),
            prepared: HashMap::new(),
            partials: None,
            channel_scratch: HashMap::new(),
            binds: BindCache::default(),
            buffers_created: 0,
        }
    }

    /// The params buffer and plan for a key, created on first use. The buffer's contents never
    /// change, so several calls recorded into one encoder cannot see each other's parameters.
    pub fn prepare(&mut self, key: ParamsKey) -> Prepared {
        if let Some(p) = self.prepared.get(&key) {
            return p.clone();
        }
        if self.prepared.len() >= MAX_PREPARED {
            self.prepared.clear();
        }
        let limits = *self.ctx.limits();
        let plan = (!key.is_empty()).then(|| Plan::new(key.n, key.c, key.s, key.vec4_ok, &limits));
        let mut created = 0;
        let mut finish = |mut params: Params| {
            created += 1;
            params.eps = f32::from_bits(key.eps);
            params.momentum = key.momentum.map(f32::from_bits).unwrap_or(0.0);
            params.cumulative = u32::from(key.momentum.is_none());
            params.update_stats = u32::from(plan.is_some());
            let buffer = self
                .ctx
                .device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("batchnorm params"),
                    contents: bytemuck::bytes_of(&params),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
            Binding::whole(&buffer)
        };
        let blocks: Vec<Binding> = plan
            .as_ref()
            .map(|plan| plan.blocks.iter().map(|b| finish(b.params)).collect())
            .unwrap_or_default();
        let channel = match blocks.first() {
            Some(first) => first.clone(),
            None => finish(Params {
                channels: key.c,
                plane: 1,
                ..Params::default()
            }),
        };
        self.buffers_created += created;
        let prepared = Prepared {
            plan,
            blocks,
            channel,
        };
        self.prepared.insert(key, prepared.clone());
        prepared
    }

    /// The partials buffer, grown (never shrunk) to hold `count` vec4 partials.
    pub fn partials(&mut self, count: u64) -> Binding {
        let bytes = count.max(1) * 16;
        if let Some(b) = self.partials.as_ref().filter(|b| b.size() >= bytes) {
            return Binding::whole(b);
        }
        self.buffers_created += 1;
        let buffer = self.ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("partials"),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        // Cached bind groups may point at the old buffer.
        if self.partials.replace(buffer.clone()).is_some() {
            self.binds.clear();
        }
        Binding::whole(&buffer)
    }

    /// A scratch buffer of at least `bytes`, one per `purpose`, grown on demand.
    pub fn scratch(&mut self, purpose: &'static str, bytes: u64) -> Binding {
        let bytes = bytes.max(16);
        if let Some(b) = self
            .channel_scratch
            .get(purpose)
            .filter(|b| b.size() >= bytes)
        {
            return Binding::whole(b);
        }
        self.buffers_created += 1;
        let buffer = self.ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(purpose),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        if self
            .channel_scratch
            .insert(purpose, buffer.clone())
            .is_some()
        {
            self.binds.clear();
        }
        Binding::whole(&buffer)
    }

    /// The bind group of `kernel` over `bindings`, cached.
    pub fn bind(&mut self, kernel: Kernel, bindings: &[Binding]) -> wgpu::BindGroup {
        self.binds
            .get(self.ctx.kernels(), self.ctx.device(), kernel, bindings)
    }

    /// Number of cached bind groups (for steady-state checks).
    pub fn cached_bind_groups(&self) -> usize {
        self.binds.len()
    }

    /// Number of GPU buffers created so far (for steady-state checks).
    pub fn buffers_created(&self) -> usize {
        self.buffers_created
    }
}
