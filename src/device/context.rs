//! Device setup: opening an adapter and device, or wrapping a user's, and capturing wgpu errors.

use std::sync::{Arc, Mutex};

use super::compiled::Compiled;
use super::staging::Staging;
#[cfg(not(target_arch = "wasm32"))]
use super::wait::block_on;
use super::wait::{submitted, Waits};
use crate::error::{Error, Result};
use crate::profile::{DeviceProfile, Forced, KernelLimits, PassPlan, ProfileKind, Target};

/// How [`Context::with_options`] picks an adapter. [`ContextOptions::from_env`] (the default)
/// reads `WGPU_BACKEND` and `WGPU_ADAPTER_NAME` like wgpu's own examples.
#[derive(Debug, Clone, Default)]
pub struct ContextOptions {
    /// Backends to consider; `None` means all (or what `WGPU_BACKEND` says).
    pub backends: Option<wgpu::Backends>,
    /// Pick the first adapter whose name contains this (case-insensitive).
    pub adapter_name: Option<String>,
    /// Power preference when no name is given.
    pub power_preference: wgpu::PowerPreference,
    /// Use the workgroup-memory reductions even where the adapter has subgroups (for testing the
    /// fallback path, or to work around a driver).
    pub disable_subgroups: bool,
    /// Access f16 tensors as u32 words (core WGSL) even where the adapter has SHADER_F16 (for
    /// testing that path, or to work around a driver).
    pub disable_f16: bool,
    /// Bind at most this many bytes per storage binding (below the adapter's
    /// `max_storage_buffer_binding_size`), so larger tensors are processed in windows. For
    /// tests of the windowed path and for driver workarounds.
    pub max_binding_window: Option<u64>,
    /// Dispatch at most this many workgroups along x (below the adapter's
    /// `max_compute_workgroups_per_dimension`); the rest folds into y. For tests of the folded
    /// grids and for driver workarounds.
    pub max_workgroups_per_dimension: Option<u32>,
    /// How long a blocking wait for the device (a readback, a submitted call, [`Context::wait`])
    /// may take before it fails with [`Error::Device`] instead of hanging on a device that
    /// stopped; `None` means [`DEFAULT_WAIT_TIMEOUT`]. Natively only: a browser never blocks.
    pub wait_timeout: Option<std::time::Duration>,
    /// The planner's profile (see [`crate::profile`]); `None`: from the adapter (CPU for
    /// software adapters, GPU otherwise), or what `WGPU_BATCHNORM_PROFILE` says
    /// ([`ContextOptions::from_env`]).
    pub profile: Option<ProfileKind>,
    /// Bind every storage buffer `read_write`, inputs included. For buffers a framework
    /// sub-allocates (Burn's cubecl pools many tensors into one `wgpu::Buffer`), where a call's
    /// input and output can be ranges of the same buffer: wgpu forbids one buffer bound both
    /// read-only and read-write in a dispatch, whatever the ranges. The kernels still only read
    /// their inputs. Default false (read-only inputs).
    pub read_write_bindings: bool,
    /// What tests pin instead of the planner's choice (the walk, the pass plan); see
    /// [`crate::testing`]. Default: nothing.
    #[doc(hidden)]
    pub forced: Forced,
}

impl ContextOptions {
    /// Options from the environment: `WGPU_BACKEND` (e.g. `vulkan`, `gl`, `metal`, `dx12`),
    /// `WGPU_ADAPTER_NAME` (substring of the adapter name), `WGPU_POWER_PREF` and
    /// `WGPU_BATCHNORM_PROFILE` (`cpu` or `gpu`; any other value is ignored here, and an error
    /// in [`Context::new`], which reads it with [`ContextOptions::try_from_env`]).
    pub fn from_env() -> Self {
        Self::try_from_env().unwrap_or_else(|_| ContextOptions {
            profile: None,
            ..Self::env_adapter()
        })
    }

    /// [`ContextOptions::from_env`], with an invalid `WGPU_BATCHNORM_PROFILE` an error.
    pub fn try_from_env() -> Result<Self> {
        Ok(ContextOptions {
            profile: ProfileKind::from_env()?,
            ..Self::env_adapter()
        })
    }

    fn env_adapter() -> Self {
        ContextOptions {
            backends: wgpu::Backends::from_env(),
            adapter_name: std::env::var("WGPU_ADAPTER_NAME")
                .ok()
                .filter(|s| !s.is_empty()),
            power_preference: wgpu::PowerPreference::from_env().unwrap_or_default(),
            ..ContextOptions::default()
        }
    }
}

/// Which thread raised an uncaptured error (the web has one).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type ThreadKey = std::thread::ThreadId;
#[cfg(target_arch = "wasm32")]
pub(crate) type ThreadKey = u8;

#[cfg(not(target_arch = "wasm32"))]
fn this_thread() -> ThreadKey {
    std::thread::current().id()
}

#[cfg(target_arch = "wasm32")]
fn this_thread() -> ThreadKey {
    0
}

/// Uncaptured errors kept at most, oldest dropped first.
const MAX_UNCAPTURED: usize = 64;

/// The default of [`ContextOptions::wait_timeout`]: far longer than any one call of this crate
/// takes on a working device, software adapters and tensors of several GiB included.
pub const DEFAULT_WAIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// What adapter a [`Context`] runs on.
#[derive(Debug, Clone)]
pub struct AdapterReport {
    /// Adapter name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// Vulkan, Metal, Dx12 or Gl.
    pub backend: wgpu::Backend,
    /// Discrete, integrated, virtual GPU or CPU.
    pub device_type: wgpu::DeviceType,
    /// Driver name and version, where the backend reports them.
    pub driver: String,
    /// Whether the kernels use subgroup operations.
    pub subgroups: bool,
    /// Whether GPU timestamp queries are available.
    pub timestamps: bool,
    /// Whether f16 tensors are accessed as f16 (SHADER_F16); else as u32 words.
    pub shader_f16: bool,
    /// The planner's profile (see [`crate::profile`]).
    pub profile: DeviceProfile,
}

impl std::fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({:?}, {:?}, driver: {}, subgroups: {}, timestamps: {}, shader f16: {}, \
             profile: {})",
            self.name,
            self.backend,
            self.device_type,
            if self.driver.is_empty() {
                "unknown"
            } else {
                &self.driver
            },
            if self.subgroups { "yes" } else { "no" },
            if self.timestamps { "yes" } else { "no" },
            if self.shader_f16 { "yes" } else { "no" },
            self.profile,
        )
    }
}

pub(crate) struct ContextInner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub report: AdapterReport,
    /// The kernels' layouts and pipelines, compiled by the op layer on first use and kept
    /// here so that every module, tensor and thread on this device shares them.
    pub compiled: Compiled,
    pub limits: KernelLimits,
    pub forced: Forced,
    /// See [`ContextOptions::read_write_bindings`].
    pub read_write_bindings: bool,
    /// See [`ContextOptions::wait_timeout`] (a browser never blocks, so never times out).
    #[cfg(not(target_arch = "wasm32"))]
    pub wait_timeout: std::time::Duration,
    /// Errors wgpu reported outside any error scope, when this crate owns the device, with
    /// the thread whose call raised each.
    pub uncaptured: Arc<Mutex<Vec<(ThreadKey, String)>>>,
    /// Staging buffers reused by uploads and readbacks (fresh staging memory per transfer
    /// costs several times the copy itself on some drivers).
    /// An async lock: on the web, two transfers of one context can be in flight in one thread.
    pub staging: futures_intrusive::sync::Mutex<Staging>,
}

/// A wgpu device and queue with this crate's compiled kernels. Cheap to clone (shared).
///
/// Natively a `Context` (and every module, tensor and optimizer made on it) may be used from
/// several threads at once: each thread's waits end when their own work is done, whichever
/// thread's poll ran the callback, and transfers take turns on the staging buffers. A wait
/// gives up with [`Error::Device`] after [`ContextOptions::wait_timeout`] (default
/// [`DEFAULT_WAIT_TIMEOUT`]) on a device that stopped; a transfer that fails or is cancelled
/// frees its staging buffers, so later calls start from fresh ones.
///
/// ```no_run
/// let ctx = wgpu_batchnorm::Context::new()?;
/// println!("running on {}", ctx.adapter());
/// # Ok::<(), wgpu_batchnorm::Error>(())
/// ```
///
/// One context, a module per thread:
///
/// ```no_run
/// use wgpu_batchnorm::{BatchNorm1d, Context, Tensor};
/// let ctx = Context::new()?;
/// std::thread::scope(|s| {
///     let runs: Vec<_> = (0..4)
///         .map(|t| {
///             let ctx = ctx.clone();
///             s.spawn(move || {
///                 let mut bn = BatchNorm1d::new(&ctx, 2)?;
///                 let x = Tensor::from_slice(&ctx, &[t as f32, 1.0, 2.0, 3.0], &[2, 2])?;
///                 bn.forward(&x)?.to_host()
///             })
///         })
///         .collect();
///     for run in runs {
///         println!("{:?}", run.join().expect("the thread finished")?);
///     }
///     Ok::<(), wgpu_batchnorm::Error>(())
/// })?;
/// # Ok::<(), wgpu_batchnorm::Error>(())
/// ```
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Shared<ContextInner>,
}

/// Shared ownership: `Arc` natively, where contexts and modules may cross threads; `Rc` on the
/// web, where wgpu's handles are single-threaded and an `Arc` of them would promise a thread
/// safety they do not have.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type Shared<T> = Arc<T>;
#[cfg(target_arch = "wasm32")]
pub(crate) type Shared<T> = std::rc::Rc<T>;

/// Optional features the kernels or the benchmark can use, turned on where the adapter has them.
fn wanted_features() -> wgpu::Features {
    wgpu::Features::SUBGROUP
        | wgpu::Features::SHADER_F16
        | wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
}

impl Context {
    /// Opens the default adapter (honouring `WGPU_BACKEND` and `WGPU_ADAPTER_NAME`), blocking.
    /// Native only; on the web use [`Context::new_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        block_on(Self::new_async())
    }

    /// Async form of [`Context::new`] (the only form on the web).
    pub async fn new_async() -> Result<Self> {
        Self::with_options_async(ContextOptions::try_from_env()?).await
    }

    /// Opens an adapter chosen by `options`, blocking. Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_options(options: ContextOptions) -> Result<Self> {
        block_on(Self::with_options_async(options))
    }

    /// Async form of [`Context::with_options`].
    pub async fn with_options_async(options: ContextOptions) -> Result<Self> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        if let Some(backends) = options.backends {
            desc.backends = backends;
        }
        let backends = desc.backends;
        let instance = wgpu::Instance::new(desc);
        let adapter = match &options.adapter_name {
            Some(name) => {
                let wanted = name.to_lowercase();
                let adapters = instance.enumerate_adapters(backends).await;
                let mut available = Vec::new();
                let mut chosen = None;
                for adapter in adapters {
                    let info = adapter.get_info();
                    if chosen.is_none() && info.name.to_lowercase().contains(&wanted) {
                        chosen = Some(adapter);
                    } else {
                        available.push(format!("{} ({:?})", info.name, info.backend));
                    }
                }
                chosen.ok_or_else(|| Error::AdapterNotFound {
                    name: name.clone(),
                    available,
                })?
            }
            None => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: options.power_preference,
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::NoAdapter {
                    requested: format!("backends {backends:?}: {e}"),
                })?,
        };
        let features = adapter.features() & wanted_features();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgpu-batchnorm"),
                required_features: features,
                required_limits: adapter.limits(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        // Errors outside our error scopes must not panic in wgpu's default handler.
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        // wgpu calls the handler on the thread whose call raised the error, so each error is
        // kept with that thread and reported to that thread's next call: a context shared by
        // threads does not fail one thread's call for another's mistake.
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut list) = sink.lock() {
                // A thread that never calls again must not grow the list without bound.
                if list.len() >= MAX_UNCAPTURED {
                    list.remove(0);
                }
                list.push((this_thread(), e.to_string()));
            }
        }));
        Ok(Self::build(device, queue, &options, uncaptured))
    }

    /// Wraps a device and queue the caller already owns. The kernels use subgroups if the device
    /// was created with `Features::SUBGROUP`. The device's uncaptured-error handler is left as
    /// the caller set it; this crate's calls capture their own errors with error scopes.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        Self::from_device_with_options(device, queue, &ContextOptions::default())
    }

    /// Like [`Context::from_device`], with the kernel options of `options`
    /// (`disable_subgroups`, `max_binding_window`, `max_workgroups_per_dimension`,
    /// `read_write_bindings`, ...; the adapter fields are ignored).
    pub fn from_device_with_options(
        device: wgpu::Device,
        queue: wgpu::Queue,
        options: &ContextOptions,
    ) -> Self {
        Self::build(device, queue, options, Arc::new(Mutex::new(Vec::new())))
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        options: &ContextOptions,
        uncaptured: Arc<Mutex<Vec<(ThreadKey, String)>>>,
    ) -> Self {
        let info = device.adapter_info();
        let features = device.features();
        let subgroups = features.contains(wgpu::Features::SUBGROUP) && !options.disable_subgroups;
        let device_limits = device.limits();
        let align = u64::from(device_limits.min_storage_buffer_offset_alignment).max(16);
        let max_binding = options
            .max_binding_window
            .unwrap_or(u64::MAX)
            .min(device_limits.max_storage_buffer_binding_size)
            .max(2 * align);
        let limits = KernelLimits {
            max_grid: options
                .max_workgroups_per_dimension
                .unwrap_or(u32::MAX)
                .min(device_limits.max_compute_workgroups_per_dimension)
                .max(1),
            // Whole multiples of the alignment, so windows tile without gaps.
            max_binding: max_binding / align * align,
            align,
        };
        let report = AdapterReport {
            name: info.name.clone(),
            backend: info.backend,
            device_type: info.device_type,
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            subgroups,
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            shader_f16: features.contains(wgpu::Features::SHADER_F16) && !options.disable_f16,
            profile: DeviceProfile::of_kind(
                options
                    .profile
                    .unwrap_or_else(|| ProfileKind::of_adapter(info.device_type, &info.name)),
                info.subgroup_max_size,
            ),
        };
        Context {
            inner: Shared::new(ContextInner {
                device,
                queue,
                report,
                compiled: Compiled::default(),
                limits,
                forced: options.forced,
                read_write_bindings: options.read_write_bindings,
                #[cfg(not(target_arch = "wasm32"))]
                wait_timeout: options.wait_timeout.unwrap_or(DEFAULT_WAIT_TIMEOUT),
                uncaptured,
                staging: futures_intrusive::sync::Mutex::new(Staging::default(), false),
            }),
        }
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The adapter this context runs on.
    pub fn adapter(&self) -> &AdapterReport {
        &self.inner.report
    }

    pub(crate) fn compiled(&self) -> &Compiled {
        &self.inner.compiled
    }

    /// What this context's waits poll, and for how long.
    pub(crate) fn waits(&self) -> Waits<'_> {
        Waits {
            device: &self.inner.device,
            #[cfg(not(target_arch = "wasm32"))]
            timeout: self.inner.wait_timeout,
            #[cfg(target_arch = "wasm32")]
            timeout: std::time::Duration::MAX,
        }
    }

    /// Whether `other` is this context or a clone of it. Device handles cannot tell: devices of
    /// different wgpu instances can compare equal.
    pub(crate) fn same(&self, other: &Context) -> bool {
        Shared::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn forced_pass_plan(&self) -> Option<PassPlan> {
        self.inner.forced.pass_plan
    }

    pub(crate) fn limits(&self) -> &KernelLimits {
        &self.inner.limits
    }

    /// The planner's profile for this context's device.
    pub fn profile(&self) -> &DeviceProfile {
        &self.inner.report.profile
    }

    /// What this context's plans are made for.
    pub(crate) fn target(&self) -> Target {
        Target {
            limits: self.inner.limits,
            profile: self.inner.report.profile,
            force_walk: self.inner.forced.walk,
        }
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns what they catch into
    /// [`Error::Wgpu`]. `f` itself waits on nothing; both scopes are popped before either is
    /// awaited, so no other call's scopes can interleave with them.
    pub(crate) async fn scoped_async<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let device = &self.inner.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let result = f();
        let (validation, oom) = (validation.pop(), oom.pop());
        let (validation_error, oom_error) = (validation.await, oom.await);
        if let Some(e) = validation_error.or(oom_error) {
            return Err(Error::Wgpu(e.to_string()));
        }
        self.take_uncaptured()?;
        result
    }

    /// [`Context::scoped_async`] for calls that must not wait (encode-only calls, buffer
    /// creation). Native backends answer an error scope at once, so this does not block there.
    /// A browser answers later: there the errors of `f` go to the device's uncaptured-error
    /// handler, and the next call that awaits reports them.
    pub(crate) fn scoped<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            block_on(self.scoped_async(f))
        }
        #[cfg(target_arch = "wasm32")]
        {
            let result = f();
            self.take_uncaptured()?;
            result
        }
    }

    /// Reports (once) errors that wgpu raised outside any scope on a device this crate opened,
    /// in calls made by this thread.
    pub(crate) fn take_uncaptured(&self) -> Result<()> {
        let mut list = self
            .inner
            .uncaptured
            .lock()
            .map_err(|_| Error::Device("error list poisoned".into()))?;
        let me = this_thread();
        if !list.iter().any(|(t, _)| *t == me) {
            return Ok(());
        }
        let mut mine = Vec::new();
        list.retain(|(t, e)| {
            let theirs = *t != me;
            if !theirs {
                mine.push(e.clone());
            }
            theirs
        });
        Err(Error::Wgpu(mine.join("; ")))
    }

    /// Records with `f` into a new encoder and submits it inside error scopes, then waits
    /// (without blocking the thread on the web) until the device has finished it.
    pub(crate) async fn run_async<R>(
        &self,
        f: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<R>,
    ) -> Result<R> {
        let (value, index) = self
            .scoped_async(|| {
                let mut encoder =
                    self.device()
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("batchnorm"),
                        });
                let value = f(&mut encoder)?;
                Ok((value, self.inner.queue.submit(Some(encoder.finish()))))
            })
            .await?;
        submitted(self.waits(), self.queue(), index).await?;
        Ok(value)
    }

    /// Frees the staging buffers kept for uploads and readbacks (they are recreated on demand).
    /// A transfer in flight keeps its buffers; they are freed after it when released again.
    pub fn release_staging(&self) {
        if let Some(mut staging) = self.inner.staging.try_lock() {
            *staging = Staging::default();
        }
    }

    /// Waits until all submitted work is done (without blocking the thread on the web).
    pub async fn wait_async(&self) -> Result<()> {
        let index = self.inner.queue.submit(std::iter::empty());
        submitted(self.waits(), self.queue(), index).await?;
        self.take_uncaptured()
    }

    /// Blocks until all submitted work is done. Native only; on the web use
    /// [`Context::wait_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) -> Result<()> {
        block_on(self.wait_async())
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.inner.report)
            .field("limits", &self.inner.limits)
            .finish()
    }
}
