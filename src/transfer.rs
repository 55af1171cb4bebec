//! Host-device transfers: uploads and readbacks through two reused staging buffers per
//! direction, with the host copy of one chunk overlapping the device copy of the next.
//!
//! Written once, async: a staging buffer's mapping and a submission's completion are futures
//! set by wgpu's callbacks. Natively those callbacks only run inside `Device::poll`, so the
//! waits poll first (and the blocking forms are `pollster::block_on` of the async ones); on
//! the web the browser runs them and polling does nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_intrusive::sync::ManualResetEvent;

use crate::context::Context;
use crate::error::{Error, Result};

/// A one-shot completion flag that a wgpu callback sets and an async caller awaits.
#[derive(Clone)]
pub(crate) struct Signal {
    event: Arc<ManualResetEvent>,
    failed: Arc<AtomicBool>,
}

impl Signal {
    fn new(set: bool) -> Self {
        Signal {
            event: Arc::new(ManualResetEvent::new(set)),
            failed: Arc::new(AtomicBool::new(false)),
        }
    }

    fn reset(&self) {
        self.failed.store(false, Ordering::SeqCst);
        self.event.reset();
    }

    fn finish(&self, ok: bool) {
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
        ctx: &Context,
        index: Option<wgpu::SubmissionIndex>,
        what: &str,
    ) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            // Short slices, so that the deadline is checked while a device still works.
            const SLICE: std::time::Duration = std::time::Duration::from_millis(100);
            let deadline = std::time::Instant::now() + ctx.inner.wait_timeout;
            while !self.event.is_set() {
                let poll = wgpu::PollType::Wait {
                    submission_index: index.clone(),
                    timeout: Some(SLICE),
                };
                let finished = match ctx.device().poll(poll) {
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
                        ctx.inner.wait_timeout
                    )));
                }
                if finished {
                    // The device is done; another thread's poll is running our callback.
                    std::thread::yield_now();
                }
            }
        }
        #[cfg(target_arch = "wasm32")]
        let _ = (ctx, index);
        self.event.wait().await;
        if self.failed.load(Ordering::SeqCst) {
            return Err(Error::Device(format!("{what} failed")));
        }
        Ok(())
    }
}

/// Waits until the device has finished `index` and everything submitted before it.
pub(crate) async fn submitted(ctx: &Context, index: wgpu::SubmissionIndex) -> Result<()> {
    let done = Signal::new(false);
    let signal = done.clone();
    ctx.queue()
        .on_submitted_work_done(move || signal.finish(true));
    done.settle(ctx, Some(index), "waiting for the GPU").await
}

/// Copies `len` f32 values at byte `offset` of `buffer` to the host.
pub(crate) async fn read_f32(
    ctx: &Context,
    buffer: &wgpu::Buffer,
    offset: u64,
    len: usize,
) -> Result<Vec<f32>> {
    let mut out = vec![0.0f32; len];
    download(ctx, buffer, offset, bytemuck::cast_slice_mut(&mut out)).await?;
    Ok(out)
}

/// Copies `size` bytes (a multiple of 4) at `offset` of `buffer` to the host.
#[cfg(feature = "bench")]
pub(crate) async fn read_bytes(
    ctx: &Context,
    buffer: &wgpu::Buffer,
    offset: u64,
    size: u64,
) -> Result<Vec<u8>> {
    let mut out = vec![0u8; size as usize];
    download(ctx, buffer, offset, &mut out).await?;
    Ok(out)
}

/// Host-device transfers move through two staging buffers of at most this many bytes, so that
/// the host's copy of one chunk overlaps the device's copy of the other.
const STAGING_CHUNK: u64 = 8 << 20;

/// A reused staging buffer, its mapping signal and the submission that last used it.
pub(crate) struct StagingSlot {
    buffer: wgpu::Buffer,
    mapped: Signal,
    last_use: Option<wgpu::SubmissionIndex>,
}

impl StagingSlot {
    fn new(ctx: &Context, size: u64, usage: wgpu::BufferUsages, mapped: bool) -> Self {
        let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size,
            usage,
            mapped_at_creation: mapped,
        });
        StagingSlot {
            buffer,
            mapped: Signal::new(mapped),
            last_use: None,
        }
    }

    /// Asks for the buffer to be mapped once the device is done with it (does not wait).
    fn request_map(&mut self, mode: wgpu::MapMode) {
        self.mapped.reset();
        let signal = self.mapped.clone();
        self.buffer
            .slice(..)
            .map_async(mode, move |r| signal.finish(r.is_ok()));
    }

    /// Waits until a requested mapping is done.
    async fn wait_mapped(&self, ctx: &Context) -> Result<()> {
        self.mapped
            .settle(ctx, self.last_use.clone(), "mapping a staging buffer")
            .await
    }
}

/// Two staging slots of at least `chunk` bytes in `slots`, replaced when too small.
fn staging_slots<'a>(
    ctx: &Context,
    slots: &'a mut Vec<StagingSlot>,
    chunk: u64,
    usage: wgpu::BufferUsages,
    mapped: bool,
) -> &'a mut [StagingSlot] {
    if slots.len() != 2 || slots.iter().any(|s| s.buffer.size() < chunk) {
        *slots = (0..2)
            .map(|_| StagingSlot::new(ctx, chunk, usage, mapped))
            .collect();
    }
    slots
}

/// A transfer's hold on the staging slots of one direction: unless the transfer reaches its
/// end ([`InUse::done`]), dropping it frees the slots, so that a failed or cancelled
/// transfer (an error, a dropped future) leaves no buffer mapped, half-mapped or waiting on a
/// callback for the next transfer to trip over; the next one makes fresh slots.
struct InUse<'a> {
    slots: &'a mut Vec<StagingSlot>,
    done: bool,
}

impl<'a> InUse<'a> {
    fn new(slots: &'a mut Vec<StagingSlot>) -> Self {
        InUse { slots, done: false }
    }

    fn done(mut self) {
        self.done = true;
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.slots.clear();
        }
    }
}

/// The staging chunk for a transfer of `size` bytes: small transfers get small buffers, and
/// none exceeds the device's largest buffer (a multiple of 256 bytes, so that chunks keep the
/// copy alignment).
fn chunk_for(ctx: &Context, size: u64) -> u64 {
    let limit = (ctx.device().limits().max_buffer_size / 256 * 256).max(256);
    size.next_power_of_two()
        .clamp(256, STAGING_CHUNK.min(limit))
}

/// Writes `data` (a multiple of 4 bytes) at `offset` of `buffer` through the context's upload
/// staging buffers, which stay mapped between uploads; returns once the device has the data.
pub(crate) async fn upload(
    ctx: &Context,
    buffer: &wgpu::Buffer,
    offset: u64,
    data: &[u8],
) -> Result<()> {
    let size = data.len() as u64;
    if size == 0 {
        return Ok(());
    }
    if !buffer.usage().contains(wgpu::BufferUsages::COPY_DST) {
        return Err(Error::InvalidBuffer(
            "writing needs BufferUsages::COPY_DST".into(),
        ));
    }
    // An async lock: on the web, two transfers of one context can be in flight in one thread.
    let mut staging = ctx.inner.staging.lock().await;
    let in_use = InUse::new(&mut staging.upload);
    let chunk = chunk_for(ctx, size);
    let usage = wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC;
    let slots = ctx
        .scoped_async(|| Ok(staging_slots(ctx, in_use.slots, chunk, usage, true)))
        .await?;
    let mut last = None;
    for (i, piece) in data.chunks(chunk as usize).enumerate() {
        let slot = &mut slots[i % 2];
        slot.wait_mapped(ctx).await?;
        let index = ctx
            .scoped_async(|| {
                let len = piece.len() as u64;
                slot.buffer
                    .slice(..len)
                    .get_mapped_range_mut()
                    .map_err(|e| Error::Device(e.to_string()))?
                    .copy_from_slice(piece);
                slot.buffer.unmap();
                let mut encoder =
                    ctx.device()
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("upload"),
                        });
                encoder.copy_buffer_to_buffer(
                    &slot.buffer,
                    0,
                    buffer,
                    offset + i as u64 * chunk,
                    len,
                );
                let index = ctx.queue().submit(Some(encoder.finish()));
                slot.last_use = Some(index.clone());
                // Mapped again as soon as the device is done: ready for the next chunk or upload.
                slot.request_map(wgpu::MapMode::Write);
                Ok(index)
            })
            .await?;
        last = Some(index);
    }
    if let Some(index) = last {
        submitted(ctx, index).await?;
    }
    in_use.done();
    Ok(())
}

/// Reads `out.len()` bytes (a multiple of 4) at `offset` of `buffer` through the context's
/// download staging buffers; the device copies chunk i + 1 while the host copies chunk i out.
pub(crate) async fn download(
    ctx: &Context,
    buffer: &wgpu::Buffer,
    offset: u64,
    out: &mut [u8],
) -> Result<()> {
    let size = out.len() as u64;
    if size == 0 {
        return Ok(());
    }
    if !buffer.usage().contains(wgpu::BufferUsages::COPY_SRC) {
        return Err(Error::InvalidBuffer(
            "reading back needs BufferUsages::COPY_SRC".into(),
        ));
    }
    let mut staging = ctx.inner.staging.lock().await;
    let in_use = InUse::new(&mut staging.download);
    let chunk = chunk_for(ctx, size);
    let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
    let slots = ctx
        .scoped_async(|| Ok(staging_slots(ctx, in_use.slots, chunk, usage, false)))
        .await?;
    let mut pending: Option<(usize, &mut [u8])> = None;
    let mut pieces = out.chunks_mut(chunk as usize).enumerate();
    loop {
        let next = pieces.next();
        if let Some((i, piece)) = &next {
            let slot = &mut slots[i % 2];
            ctx.scoped_async(|| {
                let mut encoder =
                    ctx.device()
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("readback"),
                        });
                let len = piece.len() as u64;
                encoder.copy_buffer_to_buffer(
                    buffer,
                    offset + *i as u64 * chunk,
                    &slot.buffer,
                    0,
                    len,
                );
                slot.last_use = Some(ctx.queue().submit(Some(encoder.finish())));
                slot.request_map(wgpu::MapMode::Read);
                Ok(())
            })
            .await?;
        }
        if let Some((j, piece)) = pending.take() {
            let slot = &mut slots[j % 2];
            slot.wait_mapped(ctx).await?;
            {
                let len = piece.len() as u64;
                let view = slot
                    .buffer
                    .slice(..len)
                    .get_mapped_range()
                    .map_err(|e| Error::Device(e.to_string()))?;
                piece.copy_from_slice(&view);
            }
            slot.buffer.unmap();
        }
        match next {
            Some(n) => pending = Some(n),
            None => break,
        }
    }
    in_use.done();
    Ok(())
}
