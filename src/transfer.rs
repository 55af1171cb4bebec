//! Host-device transfers: uploads and readbacks through two reused staging buffers per
//! direction, with the host copy of one chunk overlapping the device copy of the next.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::context::Context;
use crate::error::{Error, Result};

/// Copies `len` f32 values at byte `offset` of `buffer` to the host.
pub(crate) fn read_f32(
    ctx: &Context,
    buffer: &wgpu::Buffer,
    offset: u64,
    len: usize,
) -> Result<Vec<f32>> {
    let mut out = vec![0.0f32; len];
    download(ctx, buffer, offset, bytemuck::cast_slice_mut(&mut out))?;
    Ok(out)
}

/// Copies `size` bytes (a multiple of 4) at `offset` of `buffer` to the host.
#[cfg(feature = "bench")]
pub(crate) fn read_bytes(
    ctx: &Context,
    buffer: &wgpu::Buffer,
    offset: u64,
    size: u64,
) -> Result<Vec<u8>> {
    let mut out = vec![0u8; size as usize];
    download(ctx, buffer, offset, &mut out)?;
    Ok(out)
}

/// Host-device transfers move through two staging buffers of at most this many bytes, so that
/// the host's copy of one chunk overlaps the device's copy of the other.
const STAGING_CHUNK: u64 = 8 << 20;

/// Mapping state of a staging buffer, set by its map_async callback.
const MAP_PENDING: u8 = 0;
const MAP_DONE: u8 = 1;
const MAP_FAILED: u8 = 2;

/// A reused staging buffer, its mapping state and the submission that last used it.
pub(crate) struct StagingSlot {
    buffer: wgpu::Buffer,
    state: Arc<AtomicU8>,
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
            state: Arc::new(AtomicU8::new(if mapped { MAP_DONE } else { MAP_PENDING })),
            last_use: None,
        }
    }

    /// Asks for the buffer to be mapped once the device is done with it (does not wait).
    fn request_map(&mut self, mode: wgpu::MapMode) {
        self.state.store(MAP_PENDING, Ordering::SeqCst);
        let state = self.state.clone();
        self.buffer.slice(..).map_async(mode, move |r| {
            state.store(
                if r.is_ok() { MAP_DONE } else { MAP_FAILED },
                Ordering::SeqCst,
            );
        });
    }

    /// Blocks until a requested mapping is done: first waiting for the submission that used the
    /// buffer last (not for later ones), then for everything.
    fn wait_mapped(&self, ctx: &Context) -> Result<()> {
        for poll in [
            wgpu::PollType::Wait {
                submission_index: self.last_use.clone(),
                timeout: None,
            },
            wgpu::PollType::wait_indefinitely(),
        ] {
            match self.state.load(Ordering::SeqCst) {
                MAP_DONE => return Ok(()),
                MAP_FAILED => return Err(Error::Device("mapping a staging buffer failed".into())),
                _ => {}
            }
            ctx.device()
                .poll(poll)
                .map_err(|e| Error::Device(e.to_string()))?;
        }
        match self.state.load(Ordering::SeqCst) {
            MAP_DONE => Ok(()),
            _ => Err(Error::Device(
                "mapping a staging buffer did not complete".into(),
            )),
        }
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

fn lock_staging(ctx: &Context) -> Result<std::sync::MutexGuard<'_, crate::context::Staging>> {
    ctx.inner
        .staging
        .lock()
        .map_err(|_| Error::Device("staging buffers poisoned".into()))
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
pub(crate) fn upload(ctx: &Context, buffer: &wgpu::Buffer, offset: u64, data: &[u8]) -> Result<()> {
    let size = data.len() as u64;
    if size == 0 {
        return Ok(());
    }
    if !buffer.usage().contains(wgpu::BufferUsages::COPY_DST) {
        return Err(Error::InvalidBuffer(
            "writing needs BufferUsages::COPY_DST".into(),
        ));
    }
    let mut staging = lock_staging(ctx)?;
    ctx.scoped(|| {
        let chunk = chunk_for(ctx, size);
        let usage = wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC;
        let slots = staging_slots(ctx, &mut staging.upload, chunk, usage, true);
        let mut last = None;
        for (i, piece) in data.chunks(chunk as usize).enumerate() {
            let slot = &mut slots[i % 2];
            slot.wait_mapped(ctx)?;
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
            encoder.copy_buffer_to_buffer(&slot.buffer, 0, buffer, offset + i as u64 * chunk, len);
            let index = ctx.queue().submit(Some(encoder.finish()));
            slot.last_use = Some(index.clone());
            // Mapped again as soon as the device is done: ready for the next chunk or upload.
            slot.request_map(wgpu::MapMode::Write);
            last = Some(index);
        }
        ctx.device()
            .poll(wgpu::PollType::Wait {
                submission_index: last,
                timeout: None,
            })
            .map_err(|e| Error::Device(e.to_string()))?;
        Ok(())
    })
}

/// Reads `out.len()` bytes (a multiple of 4) at `offset` of `buffer` through the context's
/// download staging buffers; the device copies chunk i + 1 while the host copies chunk i out.
pub(crate) fn download(
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
    let mut staging = lock_staging(ctx)?;
    ctx.scoped(|| {
        let chunk = chunk_for(ctx, size);
        let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let slots = staging_slots(ctx, &mut staging.download, chunk, usage, false);
        let mut pending: Option<(usize, &mut [u8])> = None;
        let mut pieces = out.chunks_mut(chunk as usize).enumerate();
        loop {
            let next = pieces.next();
            if let Some((i, piece)) = &next {
                let slot = &mut slots[i % 2];
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
            }
            if let Some((j, piece)) = pending.take() {
                let slot = &mut slots[j % 2];
                slot.wait_mapped(ctx)?;
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
        Ok(())
    })
}
