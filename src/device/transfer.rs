//! Host-device transfers: uploads and readbacks through two reused staging buffers per
//! direction, with the host copy of one chunk overlapping the device copy of the next.
//!
//! Written once, async: a staging buffer's mapping and a submission's completion are futures
//! set by wgpu's callbacks. Natively those callbacks only run inside `Device::poll`, so the
//! waits poll first (and the blocking forms are `pollster::block_on` of the async ones); on
//! the web the browser runs them and polling does nothing.

use super::context::Context;
use super::staging::{chunk_for, staging_slots, InUse, StagingSlot};
use super::wait::submitted;
use crate::error::{Error, Result};

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

/// An error unless `buffer` has `usage` (`what` names the transfer).
fn needs(buffer: &wgpu::Buffer, usage: wgpu::BufferUsages, what: &str) -> Result<()> {
    if buffer.usage().contains(usage) {
        Ok(())
    } else {
        Err(Error::InvalidBuffer(format!("{what} needs {usage:?}")))
    }
}

/// The chunk size of a transfer of `size` bytes and the two staging slots it moves through
/// (made, inside error scopes, where the held ones are missing or too small).
async fn slots<'a>(
    ctx: &Context,
    in_use: &'a mut InUse<'_>,
    size: u64,
    usage: wgpu::BufferUsages,
    mapped: bool,
) -> Result<(u64, &'a mut [StagingSlot])> {
    let chunk = chunk_for(ctx.device(), size);
    let device = ctx.device();
    let slots = ctx
        .scoped_async(|| Ok(staging_slots(device, in_use.slots, chunk, usage, mapped)))
        .await?;
    Ok((chunk, slots))
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
    needs(buffer, wgpu::BufferUsages::COPY_DST, "writing")?;
    // An async lock: on the web, two transfers of one context can be in flight in one thread.
    let mut staging = ctx.inner.staging.lock().await;
    let mut in_use = InUse::new(&mut staging.upload);
    let usage = wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC;
    let (chunk, slots) = slots(ctx, &mut in_use, size, usage, true).await?;
    let mut last = None;
    for (i, piece) in data.chunks(chunk as usize).enumerate() {
        let slot = &mut slots[i % 2];
        slot.wait_mapped(ctx.waits()).await?;
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
        submitted(ctx.waits(), ctx.queue(), index).await?;
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
    needs(buffer, wgpu::BufferUsages::COPY_SRC, "reading back")?;
    let mut staging = ctx.inner.staging.lock().await;
    let mut in_use = InUse::new(&mut staging.download);
    let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
    let (chunk, slots) = slots(ctx, &mut in_use, size, usage, false).await?;
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
            slot.wait_mapped(ctx.waits()).await?;
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
