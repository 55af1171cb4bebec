//! f32 GPU tensors: a buffer (or a window of one) holding an (N, C, *spatial) array in
//! contiguous (NCHW) or channels-last (NHWC) memory order.

mod counter;
mod host;

pub use counter::BatchCounter;

use crate::device::Context;
use crate::error::{Error, Result};

pub use crate::dtype::{DType, MemoryFormat};

/// Usage flags of the buffers this crate creates for tensors.
pub const TENSOR_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// A buffer range bound to one binding; `size` 0 binds the rest of the buffer.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Binding {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl Binding {
    pub fn whole(buffer: &wgpu::Buffer) -> Self {
        Binding {
            buffer: buffer.clone(),
            offset: 0,
            size: 0,
        }
    }
}

/// Checks that `bytes` at `offset` of a caller's `buffer` can be bound as storage: the usage,
/// the device's offset alignment, and the size (`what` names the contents in the message).
pub(crate) fn check_window(
    ctx: &Context,
    buffer: &wgpu::Buffer,
    offset: u64,
    bytes: u64,
    what: impl FnOnce() -> String,
) -> Result<()> {
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
    if offset.saturating_add(bytes) > buffer.size() {
        return Err(Error::InvalidBuffer(format!(
            "{} needs {bytes} bytes at offset {offset}, but the buffer holds {} bytes",
            what(),
            buffer.size()
        )));
    }
    Ok(())
}

/// A f32 tensor on the GPU with the channel axis at 1 of its shape, stored contiguous (NCHW) or
/// channels-last (NHWC, see [`MemoryFormat`]).
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
#[derive(Clone)]
pub struct Tensor {
    ctx: Context,
    buffer: wgpu::Buffer,
    offset: u64,
    shape: Vec<usize>,
    format: MemoryFormat,
    dtype: DType,
}

/// `format`, or Contiguous where both orders coincide (spatial size 1, or rank < 3).
fn canonical(shape: &[usize], format: MemoryFormat) -> MemoryFormat {
    if shape.len() < 3 || shape[2..].iter().product::<usize>() == 1 {
        MemoryFormat::Contiguous
    } else {
        format
    }
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

/// The bytes a tensor of `shape` and `dtype` occupies, rounded up to whole 4-byte words (f16
/// tensors are bound as words).
fn byte_len(shape: &[usize], dtype: DType) -> Result<u64> {
    let n = numel(shape)? as u64;
    n.checked_mul(dtype.size())
        .map(|b| b.next_multiple_of(4))
        .ok_or_else(|| Error::TooLarge {
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
    /// A new tensor holding `data`, written through the queue: nothing waits, and the data is
    /// there before the next submitted command buffer runs (small parameter tensors).
    pub(crate) fn from_slice_queued(ctx: &Context, data: &[f32], shape: &[usize]) -> Result<Self> {
        let tensor = Tensor::empty(ctx, shape)?;
        if data.len() != tensor.numel() {
            return Err(Error::ShapeMismatch {
                what: "tensor data length".into(),
                expected: vec![tensor.numel()],
                got: vec![data.len()],
            });
        }
        if !data.is_empty() {
            ctx.scoped(|| {
                ctx.queue()
                    .write_buffer(&tensor.buffer, tensor.offset, bytemuck::cast_slice(data));
                Ok(())
            })?;
        }
        Ok(tensor)
    }

    /// A new tensor of `shape` filled with zeros, e.g. for outputs.
    pub fn empty(ctx: &Context, shape: &[usize]) -> Result<Self> {
        ctx.scoped(|| Tensor::empty_unscoped(ctx, shape))
    }

    /// [`Tensor::empty`] without an error scope, for encode-only paths, which must not wait
    /// on the device (popping a scope does, on the web): the size is checked against the
    /// limits first, and an out-of-memory surfaces through the device's uncaptured-error
    /// handler (reported by the context's next scoped call).
    pub(crate) fn empty_unscoped(ctx: &Context, shape: &[usize]) -> Result<Self> {
        Tensor::empty_unscoped_of(ctx, shape, DType::F32)
    }

    fn empty_unscoped_of(ctx: &Context, shape: &[usize], dtype: DType) -> Result<Self> {
        let bytes = byte_len(shape, dtype)?;
        check_fits(ctx, shape, bytes)?;
        let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("tensor"),
            size: bytes.max(4),
            usage: TENSOR_USAGE,
            mapped_at_creation: false,
        });
        Ok(Tensor {
            ctx: ctx.clone(),
            buffer,
            offset: 0,
            shape: shape.to_vec(),
            format: MemoryFormat::Contiguous,
            dtype,
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
        Self::from_buffer_of(ctx, buffer, offset, shape, DType::F32)
    }

    /// [`Tensor::from_buffer`] for values of `dtype`, e.g. a framework's f16 tensor, which
    /// then takes the f16 path of every call. The kernels bind whole 4-byte words, so an f16
    /// tensor of an odd number of values needs the 2 bytes after its last value inside the
    /// buffer too (they are read, never written).
    pub fn from_buffer_of(
        ctx: &Context,
        buffer: &wgpu::Buffer,
        offset: u64,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Self> {
        let bytes = byte_len(shape, dtype)?;
        check_window(ctx, buffer, offset, bytes, || {
            format!("shape {shape:?} of {dtype:?} (whole 4-byte words)")
        })?;
        Ok(Tensor {
            ctx: ctx.clone(),
            buffer: buffer.clone(),
            offset,
            shape: shape.to_vec(),
            format: MemoryFormat::Contiguous,
            dtype,
        })
    }

    /// A new zeroed tensor of `shape`, `dtype` and memory `format`.
    pub fn empty_of(
        ctx: &Context,
        shape: &[usize],
        dtype: DType,
        format: MemoryFormat,
    ) -> Result<Self> {
        Ok(ctx
            .scoped(|| Tensor::empty_unscoped_of(ctx, shape, dtype))?
            .with_memory_format(format))
    }

    /// An f32 tensor over the start of `buffer` (the crate's own scratch space).
    pub(crate) fn over(
        ctx: &Context,
        buffer: wgpu::Buffer,
        shape: &[usize],
        format: MemoryFormat,
    ) -> Tensor {
        Tensor {
            ctx: ctx.clone(),
            buffer,
            offset: 0,
            shape: shape.to_vec(),
            format: MemoryFormat::Contiguous,
            dtype: DType::F32,
        }
        .with_memory_format(format)
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A typed error unless the tensor holds `dtype`.
    pub(crate) fn expect_dtype(&self, what: &str, dtype: DType) -> Result<()> {
        if self.dtype == dtype {
            Ok(())
        } else {
            Err(Error::DTypeMismatch {
                what: what.to_string(),
                expected: dtype,
                got: self.dtype,
            })
        }
    }

    /// A new tensor of `shape` filled with zeros (the same as [`Tensor::empty`]: new buffers
    /// are zeroed).
    pub fn zeros(ctx: &Context, shape: &[usize]) -> Result<Self> {
        Tensor::empty(ctx, shape)
    }

    /// Uploads `data`, stored in `format`'s memory order, as a tensor of logical `shape`
    /// (N, C, *spatial).
    ///
    /// ```no_run
    /// use wgpu_batchnorm::{Context, MemoryFormat, Tensor};
    /// let ctx = Context::new()?;
    /// // (N, C, H, W) = (1, 2, 1, 2) stored as (N, H, W, C): channel 0 holds 1 and 3.
    /// let x = Tensor::from_slice_in(&ctx, &[1.0, 2.0, 3.0, 4.0], &[1, 2, 1, 2], MemoryFormat::ChannelsLast)?;
    /// assert_eq!(x.memory_format(), MemoryFormat::ChannelsLast);
    /// # Ok::<(), wgpu_batchnorm::Error>(())
    /// ```
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_slice_in(
        ctx: &Context,
        data: &[f32],
        shape: &[usize],
        format: MemoryFormat,
    ) -> Result<Self> {
        Ok(Tensor::from_slice(ctx, data, shape)?.with_memory_format(format))
    }

    /// A new zeroed tensor of logical `shape` stored in `format`.
    pub fn empty_in(ctx: &Context, shape: &[usize], format: MemoryFormat) -> Result<Self> {
        Ok(Tensor::empty(ctx, shape)?.with_memory_format(format))
    }

    /// The same buffer read in `format`'s memory order (no copy): for a caller's buffer that
    /// already holds channels-last data, say.
    pub fn with_memory_format(mut self, format: MemoryFormat) -> Self {
        self.format = canonical(&self.shape, format);
        self
    }

    /// The memory order of the elements.
    pub fn memory_format(&self) -> MemoryFormat {
        self.format
    }

    /// The context the tensor was made with.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// A typed error unless the tensor lives on `ctx`'s device (binding it elsewhere would be a
    /// wgpu validation error, or a panic inside wgpu).
    pub(crate) fn check_context(&self, ctx: &Context, what: &str) -> Result<()> {
        if self.ctx.same(ctx) {
            Ok(())
        } else {
            Err(Error::WrongDevice(format!(
                "{what} was made with another Context ({}) than this call's ({}); share one \
                 Context (clone it) per device",
                self.ctx.adapter().name,
                ctx.adapter().name
            )))
        }
    }

    /// The shape, (N, C, *spatial).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the data in bytes (f16 tensors: rounded up to whole 4-byte words, the size
    /// they are bound with).
    pub fn size_bytes(&self) -> u64 {
        (self.numel() as u64 * self.dtype.size()).next_multiple_of(4)
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

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .field("format", &self.format)
            .field("offset", &self.offset)
            .field("buffer_size", &self.buffer.size())
            .field("adapter", &self.ctx.adapter().name)
            .finish()
    }
}
