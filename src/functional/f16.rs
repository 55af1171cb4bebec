//! f16 activations on devices without SHADER_F16 (and where a plan keeps intermediate values
//! in memory): f32 copies in scratch space, converted at the call's edges.

use crate::error::Result;
use crate::ops::convert::{ConvertBindings, ConvertNativeBindings, Direction};
use crate::ops::Binding;
use crate::tensor::Tensor;

use super::*;

impl Functional {
    /// An f32 stand-in for the f16 tensor `t` (same shape and memory format) in this
    /// runner's scratch space, one per `purpose`.
    pub(super) fn f32_copy(&mut self, purpose: &'static str, t: &Tensor) -> Result<Tensor> {
        let bytes = (t.numel() as u64 * 4).max(4);
        self.ws.check_buffer_fits(purpose, bytes)?;
        let buffer = self.ws.scratch(purpose, bytes).buffer;
        Ok(Tensor::over(
            &self.ctx,
            buffer,
            t.shape(),
            t.memory_format(),
        ))
    }

    /// Records the conversion between the f16 tensor `half` and its f32 copy `single`.
    pub(crate) fn record_convert(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        half: &Tensor,
        single: &Tensor,
        direction: Direction,
    ) {
        let count = half.numel() as u64;
        if count == 0 {
            return;
        }
        // Windows of at most one binding of the f32 copy, starting at multiples of 128
        // elements (256-byte offsets on both sides; f16 tensors start at offset 0).
        let limits = *self.ctx.limits();
        let chunk = (limits.max_binding / 4 / 128 * 128).max(128);
        let native = self.ctx.adapter().shader_f16;
        let ws = &mut self.ws;
        let mut start = 0u64;
        while start < count {
            let n = chunk.min(count - start);
            let chan = ws.channel_params(0, 0, n as u32, 0.0);
            let window = |t: &Tensor, size: u64| Binding {
                buffer: t.buffer().clone(),
                offset: t.offset() + start * size,
                size: (n * size).next_multiple_of(4),
            };
            let (h, f) = (window(half, 2), window(single, 4));
            let grid = crate::ops::plan::grid(n.div_ceil(2).div_ceil(256), limits.max_grid);
            ws.record(encoder, "f16 conversion", |rec| {
                if native {
                    let op = ConvertNativeBindings {
                        chan,
                        half: h,
                        single: f,
                    };
                    op.encode(rec, direction, grid);
                } else {
                    let op = ConvertBindings {
                        chan,
                        half: h,
                        single: f,
                    };
                    op.encode(rec, direction, grid);
                }
            });
            start += n;
        }
    }
}
