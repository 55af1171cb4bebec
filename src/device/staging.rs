//! The staging buffers that uploads and readbacks move through: two per direction, reused,
//! and a guard that frees them when a transfer does not reach its end.

use super::wait::{Signal, Waits};
use crate::error::Result;

/// Reused staging buffers, two per direction so that the host copy of one chunk overlaps the
/// device copy of the next: `upload` (MAP_WRITE | COPY_SRC, kept mapped between uploads) and
/// `download` (MAP_READ | COPY_DST).
#[derive(Default)]
pub(crate) struct Staging {
    pub upload: Vec<StagingSlot>,
    pub download: Vec<StagingSlot>,
}

/// Host-device transfers move through two staging buffers of at most this many bytes, so that
/// the host's copy of one chunk overlaps the device's copy of the other.
const STAGING_CHUNK: u64 = 8 << 20;

/// A reused staging buffer, its mapping signal and the submission that last used it.
pub(crate) struct StagingSlot {
    pub buffer: wgpu::Buffer,
    mapped: Signal,
    pub last_use: Option<wgpu::SubmissionIndex>,
}

impl StagingSlot {
    fn new(device: &wgpu::Device, size: u64, usage: wgpu::BufferUsages, mapped: bool) -> Self {
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
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
    pub fn request_map(&mut self, mode: wgpu::MapMode) {
        self.mapped.reset();
        let signal = self.mapped.clone();
        self.buffer
            .slice(..)
            .map_async(mode, move |r| signal.finish(r.is_ok()));
    }

    /// Waits until a requested mapping is done.
    pub async fn wait_mapped(&self, waits: Waits<'_>) -> Result<()> {
        self.mapped
            .settle(waits, self.last_use.clone(), "mapping a staging buffer")
            .await
    }
}

/// Two staging slots of at least `chunk` bytes in `slots`, replaced when too small.
pub(crate) fn staging_slots<'a>(
    device: &wgpu::Device,
    slots: &'a mut Vec<StagingSlot>,
    chunk: u64,
    usage: wgpu::BufferUsages,
    mapped: bool,
) -> &'a mut [StagingSlot] {
    if slots.len() != 2 || slots.iter().any(|s| s.buffer.size() < chunk) {
        *slots = (0..2)
            .map(|_| StagingSlot::new(device, chunk, usage, mapped))
            .collect();
    }
    slots
}

/// A transfer's hold on the staging slots of one direction: unless the transfer reaches its
/// end ([`InUse::done`]), dropping it frees the slots, so that a failed or cancelled
/// transfer (an error, a dropped future) leaves no buffer mapped, half-mapped or waiting on a
/// callback for the next transfer to trip over; the next one makes fresh slots.
pub(crate) struct InUse<'a> {
    pub slots: &'a mut Vec<StagingSlot>,
    done: bool,
}

impl<'a> InUse<'a> {
    pub fn new(slots: &'a mut Vec<StagingSlot>) -> Self {
        InUse { slots, done: false }
    }

    pub fn done(mut self) {
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
pub(crate) fn chunk_for(device: &wgpu::Device, size: u64) -> u64 {
    let limit = (device.limits().max_buffer_size / 256 * 256).max(256);
    size.next_power_of_two()
        .clamp(256, STAGING_CHUNK.min(limit))
}
