//! Device profiles: the planner's tuning constants for the kind of device a [`crate::Context`]
//! runs on, derived once from the adapter.
//!
//! A CPU adapter (lavapipe, llvmpipe, SwiftShader, WARP) runs a few hundred invocations at a
//! time, eight SIMD lanes each: there the fewest, longest invocations win, and every constant
//! of [`DeviceProfile::cpu`] was measured on lavapipe (see BENCHMARKS.md). A GPU keeps tens of
//! thousands of invocations in flight (an H100 about 270,000) and hides memory latency only
//! with that many: [`DeviceProfile::gpu`] launches, for every pass over the activations, at
//! least `min(E / 16, 65536)` invocations (E elements), in runs of the subgroup width reading
//! neighbouring items.
//!
//! Force one with [`crate::ContextOptions::profile`] or `WGPU_BATCHNORM_PROFILE=cpu|gpu` (read
//! by [`crate::Context::new`] beside `WGPU_BACKEND`): tests, the golden runner and the bench
//! run the GPU plans on lavapipe, GL and in the browser that way.

use crate::error::{Error, Result};

/// Which tuning a context plans with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProfileKind {
    /// Software adapters: few, long invocations.
    Cpu,
    /// Discrete, integrated and virtual GPUs, and adapters of unknown kind.
    Gpu,
}

impl ProfileKind {
    /// The environment variable that forces a profile.
    pub const ENV: &'static str = "WGPU_BATCHNORM_PROFILE";

    /// Parses `cpu` or `gpu` (any case); `str::parse` does the same.
    pub(crate) fn parse(s: &str) -> Result<ProfileKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(ProfileKind::Cpu),
            "gpu" => Ok(ProfileKind::Gpu),
            other => Err(Error::InvalidArgument(format!(
                "{}={other:?}: expected cpu or gpu",
                Self::ENV
            ))),
        }
    }

    /// The profile `WGPU_BATCHNORM_PROFILE` names, None when it is unset or empty.
    pub(crate) fn from_env() -> Result<Option<ProfileKind>> {
        match std::env::var(Self::ENV) {
            Ok(s) if !s.trim().is_empty() => Self::parse(&s).map(Some),
            _ => Ok(None),
        }
    }

    /// The kind an adapter gets by default: CPU for software adapters (by device type, or by
    /// name where the backend reports no type, as browsers and GL do), GPU otherwise.
    pub fn of_adapter(device_type: wgpu::DeviceType, name: &str) -> ProfileKind {
        let name = name.to_ascii_lowercase();
        let software = [
            "llvmpipe",
            "lavapipe",
            "swiftshader",
            // WARP's adapter name ("warp" alone would also match unrelated names).
            "basic render driver",
        ];
        if device_type == wgpu::DeviceType::Cpu || software.iter().any(|s| name.contains(s)) {
            ProfileKind::Cpu
        } else {
            ProfileKind::Gpu
        }
    }
}

/// The planner's constants for one kind of device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceProfile {
    /// Which profile this is.
    pub kind: ProfileKind,
    /// Invocations per run of the planes and runs walks (`LANES` in `walk.wgsl`, a pipeline
    /// constant): neighbouring invocations of a run read neighbouring items. Lavapipe's SIMD
    /// width on the CPU; the subgroup width (or 32) on a GPU.
    pub run_width: u32,
    /// Invocations a pass over the activations must launch at least, up to: with
    /// [`DeviceProfile::values_per_invocation`], each such dispatch launches at least
    /// `min(E / values_per_invocation, min_invocations)` invocations. 0: no floor (CPU).
    pub min_invocations: u64,
    /// See [`DeviceProfile::min_invocations`].
    pub values_per_invocation: u64,
    /// Workgroup sizes the planes walk chooses from, largest first (multiples of
    /// `run_width`).
    pub planes_workgroup_sizes: [u32; 3],
    /// Invocations per workgroup of the runs and columns walks.
    pub tensor_workgroup_size: u32,
    /// Planes of at least this many items take the planes walk, ...
    pub runs_below: u32,
    /// ... of at least this many (and fewer than `runs_below`) the runs walk, shorter ones the
    /// columns walk.
    pub columns_below: u32,
    /// Items across four channels serve planes of one value with up to this many channels,
    /// whatever the rows, ...
    pub channels4_any_rows: u32,
    /// ... or with up to this many rows.
    pub channels4_max_rows: u32,
    /// One invocation per channel (the single-dispatch plan) for at least this many channels
    /// of at most `own_max_values` values each; `u32::MAX`: never.
    pub own_min_channels: u32,
    /// See [`DeviceProfile::own_min_channels`].
    pub own_max_values: u32,
    /// One workgroup per channel (the single-dispatch plan) wherever the channels give the
    /// floor of invocations by themselves.
    pub workgroup_per_channel: bool,
}

impl DeviceProfile {
    /// The CPU profile: the plans measured on lavapipe (BENCHMARKS.md).
    pub const fn cpu() -> DeviceProfile {
        DeviceProfile {
            kind: ProfileKind::Cpu,
            // Lavapipe's SIMD width.
            run_width: 8,
            min_invocations: 0,
            values_per_invocation: 16,
            planes_workgroup_sizes: [256, 128, 64],
            tensor_workgroup_size: 256,
            // Shorter planes take the runs walk (a run's steps within the reciprocal table),
            // planes shorter than a run the columns walk.
            runs_below: 64,
            columns_below: 8,
            // Items across channels, training forward + backward / eval in copies, scalar
            // against Channels4: (12544, 64) 8.71 / 2.04 against 5.27 / 0.93, (12544, 128)
            // 9.78 / 2.70 against 5.62 / 1.66, (1024, 1024) eval 2.07 against 1.09; but with
            // more channels and many rows the Channels4 backward loses more than its forward
            // gains: (12544, 256) 8.35 against 9.82, (6272, 512) 7.41 against 8.84, (50176,
            // 256) 8.17 against 10.42 (channels-last 64x256x14x14 likewise; why is not known).
            channels4_any_rows: 128,
            channels4_max_rows: 1024,
            // A channel per invocation, training forward in copies (`bench --pass-plan`):
            // (256, 1024) 3.1 against the multi-pass 5.5, 4x2048x7x7 2.9 against 6.8,
            // channels-last 4x2048x7x7 2.9 against 5.5; but 64x256x14x14 (12544 values per
            // channel) 2.4 against 1.9, and channels-last 7.3 against 4.1.
            own_min_channels: 128,
            own_max_values: 1024,
            // A workgroup per channel measured slower than the multi-pass walks on every
            // shape (4x2048x7x7 8.2 copies against 7.2, 64x256x14x14 4.3 against 2.0), and
            // not for its per-value division (without it: 8.4 and 3.9).
            workgroup_per_channel: false,
        }
    }

    /// The GPU profile for runs of `run_width` invocations (the subgroup width).
    pub const fn gpu(run_width: u32) -> DeviceProfile {
        DeviceProfile {
            kind: ProfileKind::Gpu,
            run_width,
            // About a quarter of a large GPU's resident invocations, and 16 values per
            // invocation below that: enough loads in flight to hide memory latency.
            min_invocations: 65536,
            values_per_invocation: 16,
            planes_workgroup_sizes: [256, 128, 64],
            tensor_workgroup_size: 256,
            runs_below: 2 * run_width,
            columns_below: run_width,
            // vec4 loads across channels are coalesced on a GPU whatever the rows.
            channels4_any_rows: u32::MAX,
            channels4_max_rows: u32::MAX,
            // A channel per invocation walks hundreds of dependent loads with a few hundred
            // invocations in flight: never on a GPU.
            own_min_channels: u32::MAX,
            own_max_values: 0,
            workgroup_per_channel: true,
        }
    }

    /// The profile of `kind` for an adapter whose subgroups are `subgroup_max_size` wide (0 or
    /// out of range: 32).
    pub(crate) fn of_kind(kind: ProfileKind, subgroup_max_size: u32) -> DeviceProfile {
        match kind {
            ProfileKind::Cpu => DeviceProfile::cpu(),
            ProfileKind::Gpu => {
                // Runs must divide the workgroup sizes (64 and up).
                let width = if (16..=64).contains(&subgroup_max_size)
                    && subgroup_max_size.is_power_of_two()
                {
                    subgroup_max_size
                } else {
                    32
                };
                DeviceProfile::gpu(width)
            }
        }
    }

    /// The floor of invocations for a pass over `elements` values (0 on the CPU profile).
    pub fn invocation_floor(&self, elements: u64) -> u64 {
        (elements / self.values_per_invocation.max(1)).min(self.min_invocations)
    }
}

impl std::str::FromStr for ProfileKind {
    type Err = Error;

    /// `cpu` or `gpu`, any case.
    fn from_str(s: &str) -> Result<ProfileKind> {
        ProfileKind::parse(s)
    }
}

impl std::fmt::Display for DeviceProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ProfileKind::Cpu => write!(f, "cpu (runs of {})", self.run_width),
            ProfileKind::Gpu => write!(
                f,
                "gpu (runs of {}, at least min(E / {}, {}) invocations per pass)",
                self.run_width, self.values_per_invocation, self.min_invocations
            ),
        }
    }
}

// ---- the vocabulary of plans, below the kernels that run them ------------------------------

/// How a tensor kernel walks its block (`WALK` in `shaders/pieces/walk.wgsl`); see
/// `plan::WalkGeometry` in `src/ops/plan.rs`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Walk {
    /// One plane segment per workgroup (planes of at least 64 items).
    Planes,
    /// Eight invocations per plane (planes of 8 to 63 items).
    Runs,
    /// One item column per invocation, down the rows (planes of fewer than 8 items).
    Columns,
}

impl Walk {
    /// Every walk, for tests that cover them all.
    pub const ALL: [Walk; 3] = [Walk::Planes, Walk::Runs, Walk::Columns];
}

/// How a training forward and backward run; `Forced::pass_plan` (through
/// `ContextOptions::forced`) pins it, so that tests cover each. The backward follows the
/// forward's plan where it has no epilogue (identity, no residual) and uses this batch's
/// statistics; otherwise it runs multi-pass.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PassPlan {
    /// The passes as separate dispatches through the tensor walks (the forward's statistics,
    /// merge, normalize and running update; the backward's reduction, per-channel pass and
    /// grad_input): any shape, tensors beyond one binding included.
    MultiPass,
    /// One dispatch with a workgroup per channel (plus the running update): the GPU
    /// profile's where the channels alone fill the device (see `single_pass`).
    WorkgroupPerChannel,
    /// One dispatch with an invocation per channel, over its planes in order (plus the running
    /// update).
    InvocationPerChannel,
}

impl PassPlan {
    /// Every path, for tests that cover them all.
    pub const ALL: [PassPlan; 3] = [
        PassPlan::MultiPass,
        PassPlan::WorkgroupPerChannel,
        PassPlan::InvocationPerChannel,
    ];
}

/// The limits the planner works within: the adapter's, or lower ones set through
/// [`crate::ContextOptions`] (tests use them to exercise windows and folded grids cheaply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KernelLimits {
    /// Workgroups per grid dimension (the x dimension; y takes the rest).
    pub max_grid: u32,
    /// Bytes per storage binding (a multiple of `align`).
    pub max_binding: u64,
    /// Storage-buffer offset alignment in bytes (at least 16).
    pub align: u64,
}

/// What tests pin instead of the planner's choice (through [`crate::ContextOptions::forced`];
/// see [`crate::testing`]): each applies where it can serve the shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forced {
    /// The tensor kernels' walk (tests cover every walk on every kernel).
    pub walk: Option<Walk>,
    /// The training forward's and backward's pass plan (tests cover each).
    pub pass_plan: Option<PassPlan>,
}

/// What plans are made for: the device's limits, its profile (the tuning constants, see
/// [`crate::profile`]) and the walk tests force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub limits: KernelLimits,
    pub profile: DeviceProfile,
    /// Pins the walk where it can serve the shape (tests).
    pub force_walk: Option<Walk>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapters_get_their_kind_and_env_values_parse() {
        use wgpu::DeviceType as T;
        assert_eq!(
            ProfileKind::of_adapter(T::Cpu, "llvmpipe (LLVM 15.0.6, 256 bits)"),
            ProfileKind::Cpu
        );
        assert_eq!(
            ProfileKind::of_adapter(T::Other, "SwiftShader Device (Subzero)"),
            ProfileKind::Cpu
        );
        assert_eq!(
            ProfileKind::of_adapter(T::DiscreteGpu, "NVIDIA H100 80GB HBM3"),
            ProfileKind::Gpu
        );
        assert_eq!(
            ProfileKind::of_adapter(T::Other, "unknown"),
            ProfileKind::Gpu
        );
        assert_eq!(ProfileKind::parse(" GPU "), Ok(ProfileKind::Gpu));
        assert!(matches!(
            ProfileKind::parse("tpu"),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(DeviceProfile::of_kind(ProfileKind::Gpu, 8).run_width, 32);
        assert_eq!(DeviceProfile::of_kind(ProfileKind::Gpu, 64).run_width, 64);
        assert_eq!(DeviceProfile::of_kind(ProfileKind::Gpu, 128).run_width, 32);
        for p in [
            DeviceProfile::cpu(),
            DeviceProfile::gpu(32),
            DeviceProfile::gpu(64),
        ] {
            for wg in p.planes_workgroup_sizes {
                assert_eq!(wg % p.run_width, 0, "{p}");
            }
            assert_eq!(p.tensor_workgroup_size % p.run_width, 0, "{p}");
        }
    }
}
