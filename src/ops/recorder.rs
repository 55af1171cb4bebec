//! Recording: bind groups cached per exact buffer ranges, and the dispatches an op's `encode`
//! records into an open compute pass.

use std::collections::HashMap;

use super::bindings::{Access, KernelBindings, PreparedPlan, MAX_BINDINGS};
use super::pipelines::Pipelines;
use super::variant::Specialize;
use super::Kernel;
use crate::tensor::Binding;

/// Keeps at most this many bind groups per cache; a full cache starts over.
const MAX_CACHED_BIND_GROUPS: usize = 256;

/// Bind groups keyed by kernel and exact buffer ranges, so a repeated call with the same
/// tensors creates none. The key is a fixed-size array: a lookup allocates nothing.
#[derive(Default)]
pub(crate) struct BindCache {
    groups: HashMap<(Kernel, [Option<Binding>; MAX_BINDINGS]), wgpu::BindGroup>,
}

impl BindCache {
    fn get(
        &mut self,
        pipelines: Pipelines<'_>,
        kernel: Kernel,
        bound: &[Option<Binding>; MAX_BINDINGS],
    ) -> Option<wgpu::BindGroup> {
        let layout = pipelines.layout(kernel)?;
        let spec = kernel.spec();
        let mut key: [Option<Binding>; MAX_BINDINGS] = Default::default();
        for (i, slot) in key.iter_mut().enumerate().take(spec.bindings.len()) {
            let writes = spec.bindings[i].access == Access::ReadWrite;
            *slot = Some(
                bound[i]
                    .clone()
                    .unwrap_or_else(|| pipelines.unbound(i, writes)),
            );
        }
        let key = (kernel, key);
        if let Some(group) = self.groups.get(&key) {
            return Some(group.clone());
        }
        if self.groups.len() >= MAX_CACHED_BIND_GROUPS {
            self.groups.clear();
        }
        let entries: Vec<wgpu::BindGroupEntry<'_>> = key
            .1
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &b.buffer,
                    offset: b.offset,
                    size: wgpu::BufferSize::new(b.size),
                }),
            })
            .collect();
        let group = pipelines
            .device()
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(spec.name),
                layout,
                entries: &entries,
            });
        self.groups.insert(key, group.clone());
        Some(group)
    }

    /// Forgets every group (e.g. when a scratch buffer they bind was replaced).
    pub fn clear(&mut self) {
        self.groups.clear();
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }
}

// ---- recording ------------------------------------------------------------------------------

/// What an op's `encode` records with: the device's pipelines, a bind-group cache, and an open
/// compute pass.
pub(crate) struct Recorder<'a, 'p> {
    pub pipelines: Pipelines<'a>,
    pub binds: &'a mut BindCache,
    pub pass: &'a mut wgpu::ComputePass<'p>,
    /// Dispatches and workgroups recorded so far by the workspace (tests compare them with
    /// the planner's description of a call).
    pub tally: &'a mut DispatchTally,
}

/// What a workspace has recorded: dispatches and their workgroups (two adds per dispatch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchTally {
    /// Dispatches recorded.
    pub dispatches: u64,
    /// Workgroups they launch.
    pub workgroups: u64,
}

impl Recorder<'_, '_> {
    /// One dispatch per block of `prepared`, each with the bindings `resolve` gives for it.
    pub fn dispatch_blocks<B: KernelBindings>(
        &mut self,
        bindings: &B,
        prepared: &PreparedPlan,
        special: impl Into<Specialize>,
    ) {
        let kernel = B::KERNEL;
        let special = special.into();
        let plan = &prepared.plan;
        for (i, block) in plan.blocks.iter().enumerate() {
            let bound = bindings.resolve(Some((prepared, i)));
            if i == 0 {
                let v = self.pipelines.variant(kernel, Some(plan), special, &bound);
                let Some(pipeline) = self.pipelines.pipeline(&v) else {
                    return unavailable(kernel);
                };
                self.pass.set_pipeline(&pipeline);
            }
            let Some(group) = self.binds.get(self.pipelines, kernel, &bound) else {
                return unavailable(kernel);
            };
            self.pass.set_bind_group(0, &group, &[]);
            self.pass
                .dispatch_workgroups(block.grid[0], block.grid[1], 1);
            self.tally.add(block.grid);
        }
    }

    /// One dispatch of `grid` workgroups with `bindings`.
    pub fn dispatch<B: KernelBindings>(
        &mut self,
        bindings: &B,
        special: impl Into<Specialize>,
        grid: [u32; 2],
    ) {
        let kernel = B::KERNEL;
        let bound = &bindings.resolve(None);
        let v = self.pipelines.variant(kernel, None, special.into(), bound);
        let (Some(pipeline), Some(group)) = (
            self.pipelines.pipeline(&v),
            self.binds.get(self.pipelines, kernel, bound),
        ) else {
            return unavailable(kernel);
        };
        self.pass.set_pipeline(&pipeline);
        self.pass.set_bind_group(0, &group, &[]);
        self.pass.dispatch_workgroups(grid[0], grid[1], 1);
        self.tally.add(grid);
    }
}

impl DispatchTally {
    fn add(&mut self, grid: [u32; 2]) {
        self.dispatches += 1;
        self.workgroups += u64::from(grid[0]) * u64::from(grid[1]);
    }
}

/// A dispatch of a kernel the device cannot run: a planner bug (every caller of such a kernel
/// checks `Pipelines::has` first), caught by debug builds' tests; release builds record nothing
/// rather than a dispatch the device would reject.
fn unavailable(kernel: Kernel) {
    debug_assert!(
        false,
        "{} is not available on this device",
        kernel.spec().name
    );
}
