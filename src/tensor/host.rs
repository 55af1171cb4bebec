//! Moving a tensor's values between host and device: uploads and readbacks of f32 and f16
//! values through the context's staging buffers, each with its blocking form (native only)
//! written once by `blocking!`.

use super::{byte_len, numel, DType, MemoryFormat, Tensor};
use crate::device::{blocking, download, read_f32, upload, Context};
use crate::error::{Error, Result};

impl Tensor {
    blocking! {
        /// Uploads `data` as a tensor of `shape` (`data.len()` must equal the product of `shape`);
        /// blocks until the device has it.
        pub fn from_slice(ctx: &Context, data: &[f32], shape: &[usize]) -> Result<Self> = from_slice_async;
        /// Overwrites the tensor with `data` (its length must equal the tensor's), through a reused
        /// staging buffer; blocks until the copy is done.
        pub fn write(&self, ctx: &Context, data: &[f32]) -> Result<()> = write_async;
        /// Reads the tensor into `out` (its length must equal the tensor's), through a reused
        /// staging buffer; blocks until the GPU is done with the tensor.
        pub fn read_into(&self, ctx: &Context, out: &mut [f32]) -> Result<()> = read_into_async;
        /// Reads the tensor back into host memory through its own context (blocks until the GPU is
        /// done with it).
        pub fn to_host(&self) -> Result<Vec<f32>> = to_host_async;
        /// The values of an f16 tensor (blocks until the GPU is done with it).
        pub fn to_host_f16(&self) -> Result<Vec<half::f16>> = to_host_f16_async;
        /// Uploads f16 `data` as a tensor of `shape` (see [`DType::F16`]).
        ///
        /// ```no_run
        /// use wgpu_batchnorm::{Context, DType, Tensor};
        /// let ctx = Context::new()?;
        /// let x = Tensor::from_f16(&ctx, &[half::f16::from_f32(0.5); 6], &[2, 3])?;
        /// assert_eq!(x.dtype(), DType::F16);
        /// assert_eq!(x.to_host()?, vec![0.5; 6]);
        /// # Ok::<(), wgpu_batchnorm::Error>(())
        /// ```
        pub fn from_f16(ctx: &Context, data: &[half::f16], shape: &[usize]) -> Result<Self> = from_f16_async;
        /// Overwrites an f16 tensor with `data`; blocks until the copy is done.
        pub fn write_f16(&self, data: &[half::f16]) -> Result<()> = write_f16_async;
    }

    /// Async form of [`Tensor::from_slice`].
    pub async fn from_slice_async(ctx: &Context, data: &[f32], shape: &[usize]) -> Result<Self> {
        let len = numel(shape)?;
        expect_len("Tensor::from_slice data length", len, data.len())?;
        let tensor = Tensor::empty(ctx, shape)?;
        tensor.write_async(ctx, data).await?;
        Ok(tensor)
    }

    /// Async form of [`Tensor::write`].
    pub async fn write_async(&self, ctx: &Context, data: &[f32]) -> Result<()> {
        self.check_context(ctx, "the tensor")?;
        self.expect_dtype("Tensor::write (f16 tensors: write_f16)", DType::F32)?;
        expect_len("Tensor::write data length", self.numel(), data.len())?;
        upload(ctx, &self.buffer, self.offset, bytemuck::cast_slice(data)).await
    }

    /// Async form of [`Tensor::read_into`].
    pub async fn read_into_async(&self, ctx: &Context, out: &mut [f32]) -> Result<()> {
        self.expect_dtype("Tensor::read_into (f16 tensors: to_host_f16)", DType::F32)?;
        self.check_context(ctx, "the tensor")?;
        expect_len("Tensor::read_into output length", self.numel(), out.len())?;
        download(
            ctx,
            &self.buffer,
            self.offset,
            bytemuck::cast_slice_mut(out),
        )
        .await
    }

    /// Reads the tensor back into host memory (blocks until the GPU is done with it). `ctx`
    /// must be the tensor's context (or wrap the same device); [`Tensor::to_host`] needs none.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_vec(&self, ctx: &Context) -> Result<Vec<f32>> {
        self.check_context(ctx, "the tensor")?;
        self.to_host()
    }

    /// Async form of [`Tensor::to_host`].
    pub async fn to_host_async(&self) -> Result<Vec<f32>> {
        match self.dtype {
            DType::F32 => read_f32(&self.ctx, &self.buffer, self.offset, self.numel()).await,
            DType::F16 => Ok(self
                .to_host_f16_async()
                .await?
                .iter()
                .map(|v| v.to_f32())
                .collect()),
        }
    }

    /// Async form of [`Tensor::to_host_f16`].
    pub async fn to_host_f16_async(&self) -> Result<Vec<half::f16>> {
        self.expect_dtype("Tensor::to_host_f16", DType::F16)?;
        let mut words = vec![0u8; byte_len(&self.shape, DType::F16)? as usize];
        download(&self.ctx, &self.buffer, self.offset, &mut words).await?;
        Ok(words
            .chunks_exact(2)
            .take(self.numel())
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
            .collect())
    }

    /// Async form of [`Tensor::from_f16`].
    pub async fn from_f16_async(
        ctx: &Context,
        data: &[half::f16],
        shape: &[usize],
    ) -> Result<Self> {
        let tensor = Tensor::empty_of(ctx, shape, DType::F16, MemoryFormat::Contiguous)?;
        tensor.write_f16_async(data).await?;
        Ok(tensor)
    }

    /// Uploads f16 values given as their bit patterns.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_f16_bits(ctx: &Context, data: &[u16], shape: &[usize]) -> Result<Self> {
        let values: Vec<half::f16> = data.iter().map(|&b| half::f16::from_bits(b)).collect();
        Tensor::from_f16(ctx, &values, shape)
    }

    /// Uploads f32 `data` rounded to f16 (to nearest, ties to even).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_f32_as_f16(ctx: &Context, data: &[f32], shape: &[usize]) -> Result<Self> {
        let values: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
        Tensor::from_f16(ctx, &values, shape)
    }

    /// Async form of [`Tensor::write_f16`].
    pub async fn write_f16_async(&self, data: &[half::f16]) -> Result<()> {
        self.expect_dtype("Tensor::write_f16", DType::F16)?;
        expect_len("Tensor::write_f16 data length", self.numel(), data.len())?;
        // Whole words: an odd count is padded with a zero half, inside the tensor's own
        // rounded-up allocation.
        let mut bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.resize(byte_len(&self.shape, DType::F16)? as usize, 0);
        upload(&self.ctx, &self.buffer, self.offset, &bytes).await
    }
}

/// A typed error unless the host slice's length `got` equals the tensor's `len` values.
fn expect_len(what: &str, len: usize, got: usize) -> Result<()> {
    if got == len {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what: what.to_string(),
            expected: vec![len],
            got: vec![got],
        })
    }
}
