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
        let limits = *self.ctx.limits();
        let native = self.ctx.adapter().shader_f16;
        let ws = &mut self.ws;
        for (start, n, grid) in crate::ops::convert::windows(count, &limits) {
            let chan = ws.channel_params(0, 0, n as u32, 0.0);
            let window = |t: &Tensor, size: u64| Binding {
                buffer: t.buffer().clone(),
                offset: t.offset() + start * size,
                size: (n * size).next_multiple_of(4),
            };
            let (h, f) = (window(half, 2), window(single, 4));
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
        }
    }
}
