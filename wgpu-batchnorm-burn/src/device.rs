//! One device for Burn and this crate: the contexts the kernels run on, keyed by Burn's wgpu
//! device, and the two ways to get there.
//!
//! cubecl does not hand out the `wgpu::Device` behind a Burn device, so a device must be set
//! up through this module before the module runs on it: either this crate takes the device
//! Burn would open ([`share_burn_device`], cubecl's `init_setup`), or Burn takes a device this
//! crate (or the caller) opened ([`burn_device_from_wgpu`], [`new_shared_device`], cubecl's
//! `init_device`).

use std::sync::{Arc, Mutex, MutexGuard};

use burn::backend::wgpu::{
    RuntimeOptions, WgpuDevice, WgpuSetup, graphics::AutoGraphicsApi, init_device, try_init_setup,
};
use wgpu_batchnorm::{Context, ContextOptions, Error, Functional, Result, wgpu};

/// A registered device: its context and the functional layer recording into it.
pub(crate) struct Shared {
    pub ctx: Context,
    pub functional: Functional,
}

static REGISTRY: Mutex<Vec<(WgpuDevice, Arc<Mutex<Shared>>)>> = Mutex::new(Vec::new());

fn registry() -> MutexGuard<'static, Vec<(WgpuDevice, Arc<Mutex<Shared>>)>> {
    // A panic while holding the lock leaves the list itself intact.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// This crate's context on a device Burn also uses: every storage binding read_write, because
/// cubecl pools many tensors into one `wgpu::Buffer`, so a call's input and output can share
/// one (see `ContextOptions::read_write_bindings`).
fn shared_context(device: wgpu::Device, queue: wgpu::Queue) -> Context {
    let options = ContextOptions {
        read_write_bindings: true,
        ..ContextOptions::default()
    };
    Context::from_device_with_options(device, queue, &options)
}

fn register(device: &WgpuDevice, ctx: &Context) {
    let mut list = registry();
    list.retain(|(d, _)| d != device);
    // One entry per device for the process's life, as cubecl keeps its clients.
    let shared = Arc::new(Mutex::new(Shared {
        ctx: ctx.clone(),
        functional: Functional::new(ctx),
    }));
    list.push((device.clone(), shared));
}

/// The registered device's shared state, or the error a caller sees when it was never set up.
pub(crate) fn lookup(device: &WgpuDevice) -> Result<Arc<Mutex<Shared>>> {
    registry()
        .iter()
        .find(|(d, _)| d == device)
        .map(|(_, s)| s.clone())
        .ok_or_else(|| {
            Error::WrongDevice(format!(
                "Burn device {device:?} was not set up for wgpu-batchnorm: call \
                 wgpu_batchnorm_burn::share_burn_device (before Burn first uses it) or create \
                 it with wgpu_batchnorm_burn::new_shared_device / burn_device_from_wgpu"
            ))
        })
}

/// The wgpu device under a Burn device (autodiff or not), if it is one.
pub fn wgpu_of(device: &burn::tensor::Device) -> Option<WgpuDevice> {
    match device.clone().inner().as_dispatch() {
        burn::backend::DispatchDevice::Cube(cubecl::Device::Wgpu(d)) => Some(d.clone()),
        _ => None,
    }
}

/// The context of a Burn device set up through this module.
pub fn context_of(device: &WgpuDevice) -> Result<Context> {
    Ok(lookup(device)?
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ctx
        .clone())
}

/// Opens `device` for Burn (cubecl's `init_setup`, with default runtime options) and gives
/// this crate the same `wgpu::Device` and queue. Call it before Burn first uses `device`:
/// cubecl opens a device once, and one it already opened cannot be shared afterwards.
///
/// ```no_run
/// use burn::backend::wgpu::WgpuDevice;
/// let device = WgpuDevice::default();
/// let ctx = wgpu_batchnorm_burn::share_burn_device(&device)?;
/// println!("{}", ctx.adapter().name);
/// # Ok::<(), wgpu_batchnorm::Error>(())
/// ```
pub fn share_burn_device(device: &WgpuDevice) -> Result<Context> {
    if let Ok(ctx) = context_of(device) {
        return Ok(ctx);
    }
    let setup = try_init_setup::<AutoGraphicsApi>(device, RuntimeOptions::default())
        .map_err(|e| Error::Device(format!("Burn could not open {device:?}: {e}")))?;
    let ctx = shared_context(setup.device, setup.queue);
    register(device, &ctx);
    Ok(ctx)
}

/// Hands Burn a device the caller opened (cubecl's `init_device`): Burn's tensors on the
/// returned device and this crate's kernels share `device` and `queue`. The device should
/// have the adapter's features and limits, as cubecl's own setup requests them.
pub fn burn_device_from_wgpu(
    instance: wgpu::Instance,
    adapter: wgpu::Adapter,
    device: wgpu::Device,
    queue: wgpu::Queue,
) -> (WgpuDevice, Context) {
    let ctx = shared_context(device.clone(), queue.clone());
    let backend = adapter.get_info().backend;
    let burn_device = init_device(
        WgpuSetup {
            instance,
            adapter,
            device,
            queue,
            backend,
        },
        RuntimeOptions::default(),
    );
    register(&burn_device, &ctx);
    (burn_device, ctx)
}

/// Opens the default adapter (honouring `WGPU_BACKEND`), with every feature and limit the adapter has, and gives it to both
/// Burn and this crate.
///
/// ```no_run
/// let (device, ctx) = wgpu_batchnorm_burn::new_shared_device()?;
/// let device: burn::tensor::Device = device.into();
/// # Ok::<(), wgpu_batchnorm::Error>(())
/// ```
pub fn new_shared_device() -> Result<(WgpuDevice, Context)> {
    pollster::block_on(async {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions::default())
            .await
            .map_err(|e| Error::NoAdapter {
                requested: format!("the default adapter: {e}"),
            })?;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgpu-batchnorm-burn"),
                required_features: adapter
                    .features()
                    .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        Ok(burn_device_from_wgpu(instance, adapter, device, queue))
    })
}
