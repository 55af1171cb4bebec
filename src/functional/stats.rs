//! SyncBN's statistics export: one device's per-channel count, mean and M2.

#[cfg(not(target_arch = "wasm32"))]
use crate::device::block_on;
use crate::error::{Error, Result};
use crate::ops::convert::Direction;
use crate::ops::finalize_stats::FinalizeStatsBindings;
use crate::ops::stats::StatsBindings;
use crate::tensor::{DType, Tensor};

use super::validate::*;
use super::*;

/// One device's share of a batch: values per channel, and per channel the mean and M2 (sum of
/// squared deviations from that mean).
#[derive(Clone, Debug, PartialEq)]
pub struct LocalStats {
    /// Values per channel on this device (N * spatial).
    pub count: u64,
    /// `[C]`.
    pub mean: Vec<f32>,
    /// `[C]`.
    pub m2: Vec<f32>,
}

/// SyncBN, step 1: this device's per-channel batch mean and M2 (sum of squared deviations)
/// of `input`, written to `mean` and `m2` (`[C]` f32), to be exchanged and merged with
/// [`crate::sync::merge_stats`]. [`Functional::local_stats`] reads them back.
#[derive(Clone, Copy, Debug)]
pub struct LocalStatsArgs<'a> {
    /// (N, C, *): the device's share of the batch.
    pub input: &'a Tensor,
    /// `[C]` f32, written.
    pub mean: &'a Tensor,
    /// `[C]` f32, written.
    pub m2: &'a Tensor,
}

/// The statistics of the whole batch, as every device uses them.
#[derive(Clone, Debug, PartialEq)]
pub struct MergedStats {
    /// Values per channel over all devices.
    pub count: u64,
    /// `[C]` batch mean.
    pub mean: Vec<f32>,
    /// `[C]` `1 / sqrt(M2 / count + eps)`.
    pub invstd: Vec<f32>,
    /// `[C]` sum of squared deviations.
    pub m2: Vec<f32>,
}

/// The merged statistics on a device: `(mean, invstd, m2)` tensors for
/// [`UploadedStats::global`].
#[derive(Debug)]
pub struct UploadedStats {
    count: u64,
    mean: Tensor,
    invstd: Tensor,
    m2: Tensor,
}

impl MergedStats {
    /// Uploads the statistics to `ctx`'s device, through the queue: nothing waits, and they
    /// are there before the next submitted command buffer runs.
    pub fn upload(&self, ctx: &Context) -> Result<UploadedStats> {
        let c = self.mean.len();
        Ok(UploadedStats {
            count: self.count,
            mean: Tensor::from_slice_queued(ctx, &self.mean, &[c])?,
            invstd: Tensor::from_slice_queued(ctx, &self.invstd, &[c])?,
            m2: Tensor::from_slice_queued(ctx, &self.m2, &[c])?,
        })
    }
}

impl UploadedStats {
    /// What `ForwardArgs::global_stats` takes.
    pub fn global(&self) -> GlobalStats<'_> {
        GlobalStats {
            mean: &self.mean,
            invstd: &self.invstd,
            m2: &self.m2,
            count: self.count,
        }
    }

    /// The mean, for `SavedStats::Batch` in the backward.
    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// The invstd, for `SavedStats::Batch` in the backward.
    pub fn invstd(&self) -> &Tensor {
        &self.invstd
    }
}

impl Call for LocalStatsArgs<'_> {
    fn record(&self, f: &mut Functional, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        f.encode_local_stats(encoder, self.input, self.mean, self.m2)
    }
}

impl Functional {
    fn encode_local_stats(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        input: &Tensor,
        mean: &Tensor,
        m2: &Tensor,
    ) -> Result<()> {
        let ctx = self.ctx.clone();
        check_rank("local statistics input", input)?;
        input.check_context(&ctx, "input")?;
        let c = input.shape()[1];
        check_channels(&ctx, "mean", Some(mean), c)?;
        check_channels(&ctx, "m2", Some(m2), c)?;
        if c > 0 && mean.overlaps(m2) {
            return Err(Error::Aliasing);
        }
        let (c32, geometry_of_input, count) = geometry(input, &[])?;
        self.check_scratch(geometry_of_input, c32)?;
        let Some(mut g) = geometry_of_input else {
            // No values: the merge identity (count 0) has mean 0 and M2 0.
            for t in [mean, m2] {
                if c > 0 {
                    encoder.clear_buffer(t.buffer(), t.offset(), Some(t.size_bytes()));
                }
            }
            return Ok(());
        };
        // f16 without SHADER_F16: the statistics of an f32 copy, as the forward takes them.
        let x32;
        let input = if input.dtype() == DType::F16 && !ctx.adapter().shader_f16 {
            x32 = self.f32_copy("f16 input", input)?;
            let (_, g32, _) = geometry(&x32, &[])?;
            self.check_scratch(g32, c32)?;
            g = g32.ok_or_else(|| {
                Error::InvalidArgument("the f32 copy of a non-empty input is empty".into())
            })?;
            self.record_convert(encoder, input, &x32, Direction::ToF32);
            &x32
        } else {
            input
        };
        let ws = &mut self.ws;
        let prepared = ws.plan(g);
        let plan = &prepared.plan;
        let partials = ws.partials(plan);
        let stats = StatsBindings {
            x: input.slot(),
            partials: partials.clone(),
        };
        let finalize = FinalizeStatsBindings {
            chan: ws.channel_params(c32, plan.total_tasks, count, 1.0),
            partials,
            save_mean: mean.slot(),
            save_invstd: ws.scratch("local invstd", u64::from(c32) * 4),
            m2: m2.slot(),
        };
        ws.record(encoder, "batchnorm local statistics", |rec| {
            stats.encode(rec, &prepared);
            finalize.encode(rec, prepared.plan.channel_grid);
        });
        Ok(())
    }

    /// [`LocalStatsArgs`] into new tensors, read back: this device's share of a SyncBN batch.
    /// Blocks; native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn local_stats(&mut self, input: &Tensor) -> Result<LocalStats> {
        block_on(self.local_stats_async(input))
    }

    /// Async form of [`Functional::local_stats`].
    pub async fn local_stats_async(&mut self, input: &Tensor) -> Result<LocalStats> {
        let c = input.shape().get(1).copied().unwrap_or(0);
        let (mean, m2) = (
            Tensor::empty(&self.ctx, &[c])?,
            Tensor::empty(&self.ctx, &[c])?,
        );
        let ctx = self.ctx.clone();
        ctx.run_async(|encoder| self.encode_local_stats(encoder, input, &mean, &m2))
            .await?;
        let s: usize = input.shape().iter().skip(2).product();
        Ok(LocalStats {
            count: (input.shape()[0] * s) as u64,
            mean: mean.to_host_async().await?,
            m2: m2.to_host_async().await?,
        })
    }
}
