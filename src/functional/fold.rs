//! The eval fold: batch norm as a per-channel affine map.

use crate::error::Result;
use crate::ops::channel_affine::ChannelAffineBindings;
use crate::ops::Statistics;
use crate::tensor::Tensor;

use super::*;

impl Functional {
    fn record_fold(&mut self, encoder: &mut wgpu::CommandEncoder, a: &FoldArgs<'_>, c: u32) {
        if c == 0 {
            return;
        }
        let ws = &mut self.ws;
        let op = ChannelAffineBindings {
            chan: ws.channel_params(c, 1, 0, a.eps as f32),
            mean: a.running_mean.slot(),
            spread: a.running_var.slot(),
            weight: a.weight.map(Tensor::slot),
            bias: a.bias.map(Tensor::slot),
            affine: None,
            fold_scale: Some(a.scale.slot()),
            fold_shift: Some(a.shift.slot()),
        };
        ws.record(encoder, "batchnorm eval fold", |rec| {
            op.encode(rec, Statistics::Running)
        });
    }
}

/// The eval fold: `scale = weight / sqrt(running_var + eps)`, `shift = bias - running_mean *
/// scale`, so that eval batch norm is `x * scale + shift` per channel (see
/// [`crate::fold::fuse_conv_bn_weights`] to fold it into a convolution).
impl Call for FoldArgs<'_> {
    fn record(&self, f: &mut Functional, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let c = f.check_fold(self)?;
        f.record_fold(encoder, self, c);
        Ok(())
    }
}
