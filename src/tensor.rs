//! f32 GPU tensors: a buffer (or a window of one) holding a contiguous (N, C, *spatial) array.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{Binding, Block, Plan};

/// Usage flags of the buffers this crate creates for tensors.
pub const TENSOR_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// A contiguous f32 tensor on the GPU, row-major (NCHW) with the channel axis at 1.
///
/// Cloning a tensor clones the handle, not the data.
///
/// ```no_run
/// use wgpu_batchnorm::{Context, Tensor};
/// let ctx = Context::new()?;
/// let x = Tensor::from_slice(&ctx, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
/// assert_eq!(x.to_vec(&ctx)?, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
/// # Ok::<(), wgpu_batchnorm::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Tensor {
    buffer: wgpu::Buffer,
    offset: u64,
    shape: Vec<usize>,
}

pub(crate) fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::TooLarge {
            what: format!("a tensor of shape {shape:?}"),
            bytes: u64::MAX,
            limit: u64::MAX,
        })
}

fn byte_len(shape: &[usize]) -> Result<u64> {
    let n = numel(shape)? as u64;
    n.checked_mul(4).ok_or_else(|| Error::TooLarge {
        what: format!("a tensor of shape {shape:?}"),
        bytes: u64::MAX,
        limit: u64::MAX,
    })
}

fn check_fits(ctx: &Context, shape: &[usize], bytes: u64) -> Result<()> {
    let limit = ctx.device().limits().max_buffer_size;
    if bytes > limit {
        return Err(Error::TooLarge {
            what: format!("a tensor of shape {shape:?}"),
            bytes,
            limit,
        });
    }
    Ok(())
}

impl Tensor {
    /// Uploads `data` as a tensor of `shape` (`data.len()` must equal the product of `shape`).
    pub fn from_slice(ctx: &Context, data: &[f32], shape: &[usize]) -> Result<Self> {
        let len = numel(shape)?;
        if data.len() != len {
            return Err(Error::ShapeMismatch {
                what: "Tensor::from_slice data length".into(),
                expected: vec![len],
                got: vec![data.len()],
            });
        }
        let tensor = Tensor::empty(ctx, shape)?;
        tensor.write(ctx, data)?;
        Ok(tensor)
    }

    /// Overwrites the tensor with `data` (its length must equal the tensor's), through a reused
    /// staging buffer; blocks until the copy is done.
    pub fn write(&self, ctx: &Context, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            return Err(Error::ShapeMismatch {
                what: "Tensor::write data length".into(),
                expected: vec![self.numel()],
                got: vec![data.len()],
            });
        }
        upload(ctx, &self.buffer, self.offset, bytemuck::cast_slice(data))
    }

    /// Reads the tensor into `out` (its length must equal the tensor's), through a reused
    /// staging buffer; blocks until the GPU is done with the tensor.
    pub fn read_into(&self, ctx: &Context, out: &mut [f32]) -> Result<()> {
        if out.len() != self.numel() {
            return Err(Error::ShapeMismatch {
                what: "Tensor::read_into output length".into(),
                expected: vec![self.numel()],
                got: vec![out.len()],
            });
        }
        download(
            ctx,
            &self.buffer,
            self.offset,
            bytemuck::cast_slice_mut(out),
        )
    }

    /// A new tensor of `shape` filled with zeros, e.g. for outputs.
    pub fn empty(ctx: &Context, shape: &[usize]) -> Result<Self> {
        let bytes = byte_len(shape)?;
        check_fits(ctx, shape, bytes)?;
        ctx.scoped(|| {
            let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("tensor"),
                size: bytes.max(4),
                usage: TENSOR_USAGE,
                mapped_at_creation: false,
            });
            Ok(Tensor {
                buffer,
                offset: 0,
                shape: shape.to_vec(),
            })
        })
    }

    /// Wraps `shape.iter().product()` f32 values of a caller's buffer starting at byte `offset`,
    /// without copying. The buffer needs `STORAGE` usage (and `COPY_SRC` for [`Tensor::to_vec`]);
    /// `offset` must be a multiple of the device's `min_storage_buffer_offset_alignment`.
    pub fn from_buffer(
        ctx: &Context,
        buffer: &wgpu::Buffer,
        offset: u64,
        shape: &[usize],
    ) -> Result<Self> {
        let bytes = byte_len(shape)?;
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::InvalidBuffer(
                "the buffer lacks BufferUsages::STORAGE".into(),
            ));
        }
        let align = u64::from(ctx.device().limits().min_storage_buffer_offset_alignment);
        if !offset.is_multiple_of(align) {
            return Err(Error::InvalidBuffer(format!(
                "offset {offset} is not a multiple of min_storage_buffer_offset_alignment ({align})"
            )));
        }
        let end = offset.saturating_add(bytes);
        if end > buffer.size() {
            return Err(Error::InvalidBuffer(format!(
                "shape {shape:?} needs {bytes} bytes at offset {offset}, but the buffer holds {} bytes",
                buffer.size()
            )));
        }
        Ok(Tensor {
            buffer: buffer.clone(),
            offset,
            shape: shape.to_vec(),
        })
    }

    /// A tensor over a buffer this crate made (no checks).
    pub(crate) fn from_raw(buffer: wgpu::Buffer, offset: u64, shape: Vec<usize>) -> Self {
        Tensor {
            buffer,
            offset,
            shape,
        }
    }

    /// Reads the tensor back into host memory (blocks until the GPU is done with it).
    pub fn to_vec(&self, ctx: &Context) -> Result<Vec<f32>> {
        read_f32(ctx, &self.buffer, self.offset, self.numel())
    }

    /// The shape, (N, C, *spatial).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the data in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.numel() as u64 * 4
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Byte offset of the first element in [`Tensor::buffer`].
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The binding of the whole tensor (an empty tensor binds the rest of its buffer, which is
    /// never read).
    pub(crate) fn slot(&self) -> Binding {
        Binding {
            buffer: self.buffer.clone(),
            offset: self.offset,
            size: self.size_bytes(),
        }
    }

    /// The window of this tensor that `block` of `plan` binds.
    pub(crate) fn window(&self, plan: &Plan, block: &Block) -> Binding {
        let item = plan.item_bytes();
        Binding {
            buffer: self.buffer.clone(),
            offset: self.offset + u64::from(block.params.bind_base) * item,
            size: block.bind_items * item,
        }
    }

    /// Checks that the tensor has `shape`.
    pub(crate) fn expect_shape(&self, what: &str, shape: &[usize]) -> Result<()> {
        if self.shape != shape {
            return Err(Error::ShapeMismatch {
                what: what.to_string(),
                expected: shape.to_vec(),
                got: self.shape.clone(),
            });
        }
        Ok(())
    }

    /// Whether the two tensors' bytes overlap in the same buffer.
    pub(crate) fn overlaps(&self, other: &Tensor) -> bool {
        self.buffer == other.buffer
            && self.offset < other.offset + other.size_bytes().max(1)
            && other.offset < self.offset + self.size_bytes().max(1)
    }
}

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

/// Maps `buffer` (a staging buffer) and blocks until the mapping is done.
fn map_blocking(ctx: &Context, buffer: &wgpu::Buffer, mode: wgpu::MapMode) -> Result<()> {
    let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
    buffer.slice(..).map_async(mode, move |r| {
        // A failed send means the receiver is gone, and nobody waits for the result.
        let _ = tx.send(r);
    });
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Device(e.to_string()))?;
    match pollster::block_on(rx.receive()) {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(Error::Device(format!("map_async failed: {e}"))),
        None => Err(Error::Device("map_async callback dropped".into())),
    }
}

/// A staging buffer of at least `size` bytes from `slot`, replaced when too small.
fn staging_buffer(
    ctx: &Context,
    slot: &mut Option<wgpu::Buffer>,
    size: u64,
    usage: wgpu::BufferUsages,
    mapped_at_creation: bool,
) -> (wgpu::Buffer, bool) {
    if let Some(b) = slot.as_ref().filter(|b| b.size() >= size) {
        return (b.clone(), false);
    }
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("staging"),
        size: size.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT),
        usage,
        mapped_at_creation,
    });
    *slot = Some(buffer.clone());
    (buffer, true)
}

/// Writes `data` (a multiple of 4 bytes) at `offset` of `buffer` through the context's upload
/// staging buffer, which stays mapped between uploads.
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
    let mut staging = ctx
        .inner
        .staging
        .lock()
        .map_err(|_| Error::Device("staging buffers poisoned".into()))?;
    ctx.scoped(|| {
        let (stage, fresh) = staging_buffer(
            ctx,
            &mut staging.upload,
            size,
            wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
            true,
        );
        if !fresh {
            map_blocking(ctx, &stage, wgpu::MapMode::Write)?;
        }
        stage
            .slice(..size)
            .get_mapped_range_mut()
            .map_err(|e| Error::Device(e.to_string()))?
            .copy_from_slice(data);
        stage.unmap();
        let mut encoder = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("upload"),
            });
        encoder.copy_buffer_to_buffer(&stage, 0, buffer, offset, size);
        ctx.submit_and_wait(encoder.finish())
    })
}

/// Reads `out.len()` bytes (a multiple of 4) at `offset` of `buffer` through the context's
/// download staging buffer.
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
    let mut staging = ctx
        .inner
        .staging
        .lock()
        .map_err(|_| Error::Device("staging buffers poisoned".into()))?;
    ctx.scoped(|| {
        let (stage, _) = staging_buffer(
            ctx,
            &mut staging.download,
            size,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            false,
        );
        let mut encoder = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        encoder.copy_buffer_to_buffer(buffer, offset, &stage, 0, size);
        ctx.submit_and_wait(encoder.finish())?;
        map_blocking(ctx, &stage, wgpu::MapMode::Read)?;
        {
            let view = stage
                .slice(..size)
                .get_mapped_range()
                .map_err(|e| Error::Device(e.to_string()))?;
            out.copy_from_slice(&view);
        }
        stage.unmap();
        Ok(())
    })
}
