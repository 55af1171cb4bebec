//! Waiting for the device: a completion flag set by wgpu's callbacks, and the wait for a
//! submission. Natively the callbacks only run inside `Device::poll`, so a wait polls; on the
//! web the browser runs them and polling does nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_intrusive::sync::ManualResetEvent;

use crate::error::{Error, Result};

/// What a wait polls and how long it may take ([`crate::ContextOptions::wait_timeout`];
/// unused on the web, where nothing blocks).
#[derive(Clone, Copy)]
pub(crate) struct Waits<'a> {
    pub device: &'a wgpu::Device,
    pub timeout: Duration,
}

/// Runs a future to completion on this thread: the blocking forms of the async calls. Native
/// only (a browser's thread cannot block).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    pollster::block_on(future)
}

/// The blocking form of each async method listed, written once: `pub fn name(&self, ..) -> T
/// = name_async;` gives a native-only `name` that blocks on `name_async` (`&mut self` and
/// associated functions, `pub fn name(args..) -> T = name_async;`, too), documented as the
/// blocking form of its async one.
macro_rules! blocking {
    () => {};
    (
        $(#[doc = $doc:literal])*
        pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $async_name:ident;
        $($rest:tt)*
    ) => {
        $(#[doc = $doc])*
        ///
        #[doc = concat!("Blocks until done; the async form is [`Self::", stringify!($async_name), "`]. Native only.")]
        #[cfg(not(target_arch = "wasm32"))]
        pub fn $name($($arg: $ty),*) -> $ret {
            $crate::device::block_on(Self::$async_name($($arg),*))
        }
        $crate::device::blocking!($($rest)*);
    };
    (
        $(#[doc = $doc:literal])*
        pub fn $name:ident(&mut $s:ident $(, $arg:ident: $ty:ty)*) -> $ret:ty = $async_name:ident;
        $($rest:tt)*
    ) => {
        $(#[doc = $doc])*
        ///
        #[doc = concat!("Blocks until done; the async form is [`Self::", stringify!($async_name), "`]. Native only.")]
        #[cfg(not(target_arch = "wasm32"))]
        pub fn $name(&mut $s $(, $arg: $ty)*) -> $ret {
            $crate::device::block_on($s.$async_name($($arg),*))
        }
        $crate::device::blocking!($($rest)*);
    };
    (
        $(#[doc = $doc:literal])*
        pub fn $name:ident(&$s:ident $(, $arg:ident: $ty:ty)*) -> $ret:ty = $async_name:ident;
        $($rest:tt)*
    ) => {
        $(#[doc = $doc])*
        ///
        #[doc = concat!("Blocks until done; the async form is [`Self::", stringify!($async_name), "`]. Native only.")]
        #[cfg(not(target_arch = "wasm32"))]
        pub fn $name(&$s $(, $arg: $ty)*) -> $ret {
            $crate::device::block_on($s.$async_name($($arg),*))
        }
        $crate::device::blocking!($($rest)*);
    };
}
pub(crate) use blocking;

/// A one-shot completion flag that a wgpu callback sets and an async caller awaits.
#[derive(Clone)]
pub(crate) struct Signal {
    event: Arc<ManualResetEvent>,
    failed: Arc<AtomicBool>,
}

impl Signal {
    pub(crate) fn new(set: bool) -> Self {
        Signal {
            event: Arc::new(ManualResetEvent::new(set)),
            failed: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn reset(&self) {
        self.failed.store(false, Ordering::SeqCst);
        self.event.reset();
    }

    pub(crate) fn finish(&self, ok: bool) {
        self.failed.store(!ok, Ordering::SeqCst);
        self.event.set();
    }

    /// Waits until the callback ran, polling the device natively for `index` (for everything
    /// submitted when `index` is None). `what` names the wait in errors.
    ///
    /// wgpu runs a callback inside whichever thread's poll finds it ready, so a poll of this
    /// thread can return while another thread holds our callback un-run: the event, not the
    /// poll, says when we are done. The wait therefore polls until the event is set, and gives
    /// up only after the context's wait deadline ([`crate::ContextOptions::wait_timeout`]),
    /// for a device that really stopped.
    pub(crate) async fn settle(
        &self,
        waits: Waits<'_>,
        index: Option<wgpu::SubmissionIndex>,
        what: &str,
    ) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            // Short slices, so that the deadline is checked while a device still works.
            const SLICE: std::time::Duration = std::time::Duration::from_millis(100);
            let deadline = std::time::Instant::now() + waits.timeout;
            while !self.event.is_set() {
                let poll = wgpu::PollType::Wait {
                    submission_index: index.clone(),
                    timeout: Some(SLICE),
                };
                let finished = match waits.device.poll(poll) {
                    Ok(_) => true,
                    Err(wgpu::PollError::Timeout) => false,
                    Err(e) => return Err(Error::Device(format!("{what}: {e}"))),
                };
                if self.event.is_set() {
                    break;
                }
                if std::time::Instant::now() >= deadline {
                    return Err(Error::Device(format!(
                        "{what} did not complete within {:?} (the context's wait_timeout)",
                        waits.timeout
                    )));
                }
                if finished {
                    // The device is done; another thread's poll is running our callback.
                    std::thread::yield_now();
                }
            }
        }
        #[cfg(target_arch = "wasm32")]
        let _ = (waits.device, waits.timeout, index);
        self.event.wait().await;
        if self.failed.load(Ordering::SeqCst) {
            return Err(Error::Device(format!("{what} failed")));
        }
        Ok(())
    }
}

/// Waits until the device has finished `index` and everything submitted before it.
pub(crate) async fn submitted(
    waits: Waits<'_>,
    queue: &wgpu::Queue,
    index: wgpu::SubmissionIndex,
) -> Result<()> {
    let done = Signal::new(false);
    let signal = done.clone();
    queue.on_submitted_work_done(move || signal.finish(true));
    done.settle(waits, Some(index), "waiting for the GPU").await
}
