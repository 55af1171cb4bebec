//! `num_batches_tracked` on the GPU.

use super::{check_window, Binding, TENSOR_USAGE};
use crate::device::{blocking, download, Context};
use crate::error::{Error, Result};

/// `num_batches_tracked`: a 64-bit counter on the GPU (two u32 words, low then high), which a
/// training forward increments.
#[derive(Clone)]
pub struct BatchCounter {
    ctx: Context,
    buffer: wgpu::Buffer,
    offset: u64,
}

impl std::fmt::Debug for BatchCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchCounter")
            .field("adapter", &self.ctx.adapter().name)
            .finish()
    }
}

impl BatchCounter {
    blocking! {
        /// The count (blocks until the GPU is done with it).
        pub fn get(&self) -> Result<u64> = get_async;
    }

    /// A counter at 0.
    pub fn new(ctx: &Context) -> Result<Self> {
        ctx.scoped(|| {
            let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("num_batches_tracked"),
                size: 8,
                usage: TENSOR_USAGE,
                mapped_at_creation: false,
            });
            Ok(BatchCounter {
                ctx: ctx.clone(),
                buffer,
                offset: 0,
            })
        })
    }

    /// Wraps 8 bytes of a caller's buffer at byte `offset` as the counter, without copying
    /// (e.g. a framework's two-word integer tensor). The buffer needs `STORAGE` usage (and
    /// `COPY_SRC` / `COPY_DST` for [`BatchCounter::get`] / [`BatchCounter::set`]); `offset`
    /// must be a multiple of the device's `min_storage_buffer_offset_alignment`.
    pub fn from_buffer(ctx: &Context, buffer: &wgpu::Buffer, offset: u64) -> Result<Self> {
        check_window(ctx, buffer, offset, 8, || "the counter".into())?;
        Ok(BatchCounter {
            ctx: ctx.clone(),
            buffer: buffer.clone(),
            offset,
        })
    }

    /// Async form of [`BatchCounter::get`].
    pub async fn get_async(&self) -> Result<u64> {
        let mut words = [0u32; 2];
        download(
            &self.ctx,
            &self.buffer,
            self.offset,
            bytemuck::cast_slice_mut(&mut words),
        )
        .await?;
        Ok(u64::from(words[0]) | (u64::from(words[1]) << 32))
    }

    /// Sets the count; takes effect before the next submitted command buffer.
    pub fn set(&self, value: u64) -> Result<()> {
        let words = [value as u32, (value >> 32) as u32];
        self.ctx.scoped(|| {
            self.ctx
                .queue()
                .write_buffer(&self.buffer, self.offset, bytemuck::cast_slice(&words));
            Ok(())
        })
    }

    /// The buffer holding the counter (8 bytes at [`BatchCounter::offset`]).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Where the counter's 8 bytes start in [`BatchCounter::buffer`].
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub(crate) fn binding(&self) -> Binding {
        Binding {
            buffer: self.buffer.clone(),
            offset: self.offset,
            size: 8,
        }
    }

    pub(crate) fn check_context(&self, ctx: &Context) -> Result<()> {
        if self.ctx.same(ctx) {
            Ok(())
        } else {
            Err(Error::WrongDevice(
                "num_batches_tracked was made on another device than this call's".into(),
            ))
        }
    }
}
