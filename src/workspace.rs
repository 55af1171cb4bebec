//! GPU scratch space and caches of one caller of the ops (a module or a [`crate::Functional`]):
//! prepared plans and uniform buffers per shape and hyperparameters, the partials buffer,
//! per-channel scratch, and bind groups. Built once per shape and tensor set, then reused, so
//! steady-state calls allocate no GPU objects. Every buffer is checked against the device's
//! limits before it is created.

use std::collections::HashMap;

use crate::device::{Context, Shared};
use crate::error::{Error, Result};
use crate::ops::update_running::UpdateParams;
use crate::ops::{
    BindCache, Binding, ChannelParams, DispatchTally, Pipelines, Plan, PreparedPlan, Recorder, Walk,
};
use crate::tensor::DType;

/// Everything that fixes a plan: the (N, C, S) shape and whether vec4 reads are allowed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Geometry {
    pub n: u32,
    pub c: u32,
    pub s: u32,
    /// Whether every bound tensor allows vec4 reads (16-byte aligned offsets).
    pub vec4_ok: bool,
    /// The element type the tensor kernels load and store.
    pub dtype: DType,
}

/// At most this many entries per cache; a full cache starts over.
const MAX_CACHED: usize = 64;

pub(crate) struct Workspace {
    ctx: Context,
    plans: HashMap<Geometry, Shared<PreparedPlan>>,
    /// Small parameter uniforms keyed by their kind and every word of their contents, so a
    /// cached one is reused only for identical parameters.
    uniforms: HashMap<(&'static str, UniformWords), Binding>,
    partials: Option<wgpu::Buffer>,
    /// Per-channel buffers by purpose, grown to the largest channel count seen.
    scratch: HashMap<&'static str, wgpu::Buffer>,
    binds: BindCache,
    /// GPU buffers this workspace has created (params, partials, scratch).
    buffers_created: usize,
    /// Dispatches recorded so far.
    tally: DispatchTally,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("plans", &self.plans.len())
            .field("bind_groups", &self.binds.len())
            .field("buffers_created", &self.buffers_created)
            .finish()
    }
}

/// A uniform's contents as words (every parameter uniform is at most 32 bytes, checked below).
type UniformWords = [u32; 8];
const _: () = {
    let words = std::mem::size_of::<UniformWords>();
    assert!(std::mem::size_of::<ChannelParams>() <= words);
    assert!(std::mem::size_of::<UpdateParams>() <= words);
    assert!(std::mem::size_of::<crate::ops::sgd_step::SgdParams>() <= words);
};

fn too_large(what: &str, bytes: u64, limit: u64) -> Result<()> {
    if bytes > limit {
        return Err(Error::TooLarge {
            what: what.to_string(),
            bytes,
            limit,
        });
    }
    Ok(())
}

fn clear_if_full<K, V>(map: &mut HashMap<K, V>) {
    if map.len() >= MAX_CACHED {
        map.clear();
    }
}

impl Workspace {
    pub fn new(ctx: &Context) -> Self {
        Workspace {
            ctx: ctx.clone(),
            plans: HashMap::new(),
            uniforms: HashMap::new(),
            partials: None,
            scratch: HashMap::new(),
            binds: BindCache::default(),
            buffers_created: 0,
            tally: DispatchTally::default(),
        }
    }

    fn uniform(&mut self, label: &str, contents: &[u8]) -> Binding {
        self.buffers_created += 1;
        // Written through the queue rather than `create_buffer_init`, which panics when the
        // device is lost; the write lands before the next submission, as a mapped one would.
        let buffer = self.ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: contents.len() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.ctx.queue().write_buffer(&buffer, 0, contents);
        Binding::whole(&buffer)
    }

    /// The plan of a non-empty geometry and its per-block params buffers, made on first use.
    /// The buffers never change, so several calls recorded into one encoder cannot see each
    /// other's parameters.
    pub fn plan(&mut self, g: Geometry) -> Shared<PreparedPlan> {
        if let Some(p) = self.plans.get(&g) {
            return p.clone();
        }
        clear_if_full(&mut self.plans);
        let plan = Plan::new(g.n, g.c, g.s, g.vec4_ok, g.dtype, &self.ctx.target());
        let params = plan
            .blocks
            .iter()
            .map(|b| self.uniform("block params", bytemuck::bytes_of(&b.params)))
            .collect();
        let prepared = Shared::new(PreparedPlan { plan, params });
        self.plans.insert(g, prepared.clone());
        prepared
    }

    /// The uniform holding `params`, one per distinct contents.
    fn cached_uniform<T: bytemuck::Pod>(&mut self, label: &'static str, params: &T) -> Binding {
        let bytes = bytemuck::bytes_of(params);
        let mut key: UniformWords = [0; 8];
        bytemuck::cast_slice_mut::<u32, u8>(&mut key)[..bytes.len()].copy_from_slice(bytes);
        if let Some(b) = self.uniforms.get(&(label, key)) {
            return b.clone();
        }
        clear_if_full(&mut self.uniforms);
        let b = self.uniform(label, bytes);
        self.uniforms.insert((label, key), b.clone());
        b
    }

    /// The per-channel uniform for C channels of `count` values in `total_tasks` partials.
    pub fn channel_params(&mut self, c: u32, total_tasks: u64, count: u32, eps: f32) -> Binding {
        let params = ChannelParams {
            channels: c,
            total_tasks: total_tasks as u32,
            count,
            eps,
        };
        self.cached_uniform("channel params", &params)
    }

    /// The single-dispatch forward's uniform.
    pub fn single_params(&mut self, params: crate::ops::forward_single::SingleParams) -> Binding {
        self.cached_uniform("single params", &params)
    }

    /// The SGD-step uniform.
    pub fn sgd_params(&mut self, params: crate::ops::sgd_step::SgdParams) -> Binding {
        self.cached_uniform("sgd params", &params)
    }

    /// The running-update uniform.
    pub fn update_params(&mut self, params: UpdateParams) -> Binding {
        self.cached_uniform("update params", &params)
    }

    /// A typed error unless a buffer of `bytes` can be created (buffers bound through the
    /// plan's windows, like f32 copies of f16 tensors, need no more).
    pub fn check_buffer_fits(&self, what: &str, bytes: u64) -> Result<()> {
        too_large(what, bytes, self.ctx.device().limits().max_buffer_size)
    }

    /// Checks that a scratch buffer of `bytes`, bound whole, fits the device (before any state
    /// changes).
    pub fn check_fits(&self, what: &str, bytes: u64) -> Result<()> {
        let limits = self.ctx.device().limits();
        let limit = limits
            .max_buffer_size
            .min(limits.max_storage_buffer_binding_size);
        too_large(what, bytes, limit)
    }

    /// Bytes of the partials of `plan`.
    pub fn partials_bytes(plan: &Plan) -> u64 {
        plan.partials().max(1) * 16
    }

    /// The partials buffer, grown (never shrunk) to hold the partials of `plan`. The caller
    /// checked the size with [`Workspace::check_fits`].
    pub fn partials(&mut self, plan: &Plan) -> Binding {
        let bytes = Self::partials_bytes(plan);
        if let Some(b) = self.partials.as_ref().filter(|b| b.size() >= bytes) {
            return Binding::whole(b);
        }
        self.buffers_created += 1;
        let buffer = self.ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("partials"),
            size: bytes,
            // COPY_SRC: the ops' tests read partials back.
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
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
        if let Some(b) = self.scratch.get(purpose).filter(|b| b.size() >= bytes) {
            return Binding::whole(b);
        }
        self.buffers_created += 1;
        let buffer = self.ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(purpose),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        if self.scratch.insert(purpose, buffer.clone()).is_some() {
            self.binds.clear();
        }
        Binding::whole(&buffer)
    }

    /// The partials buffer, if any (the ops' tests read it back).
    #[cfg(test)]
    pub fn partials_buffer(&self) -> Option<&wgpu::Buffer> {
        self.partials.as_ref()
    }

    /// Opens a compute pass on `encoder` and hands `f` a recorder over it.
    pub fn record(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        label: &str,
        f: impl FnOnce(&mut Recorder<'_, '_>),
    ) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        let mut rec = Recorder {
            pipelines: Pipelines::of(&self.ctx),
            binds: &mut self.binds,
            pass: &mut pass,
            tally: &mut self.tally,
        };
        f(&mut rec);
    }

    /// Dispatches recorded so far (tests hold the planner's descriptions against them).
    pub fn tally(&self) -> DispatchTally {
        self.tally
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

/// The walk that a context plans for `shape` (tests pin the walk they exercise with it).
pub(crate) fn planned_walk(ctx: &Context, n: u32, c: u32, s: u32, vec4_ok: bool) -> Walk {
    Plan::new(n, c, s, vec4_ok, DType::F32, &ctx.target())
        .geometry
        .walk
}
