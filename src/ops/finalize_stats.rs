//! Host side of `shaders/finalize_stats.wgsl`: each channel's partials merged in a fixed order
//! into save_mean, save_invstd and M2, pass 2 of the batch statistics. CPU oracle:
//! [`crate::reference::finalize_stats`].

use super::{bindings, Assembly, KernelSpec, Recorder, Statistics};

bindings! {
    /// The bindings of `finalize_stats.wgsl`.
    FinalizeStatsBindings for FinalizeStats {
        /// Channels, totals and eps (`ChannelParams`).
        chan: Uniform Whole "Channels",
        /// C * total_tasks partials from `stats`.
        partials: Read Whole "array<vec4<f32>>",
        /// Batch mean per channel (written).
        save_mean: ReadWrite Whole "array<f32>",
        /// 1 / sqrt(biased variance + eps) per channel (written).
        save_invstd: ReadWrite Whole "array<f32>",
        /// M2 (sum of squared deviations) per channel, for the running variance (written).
        m2: ReadWrite Whole "array<f32>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec::new(
    "finalize_stats",
    concat!(
        include_str!("../../shaders/finalize_stats.wgsl"),
        include_str!("../../shaders/pieces/channel_total.wgsl")
    ),
    FinalizeStatsBindings::SPEC,
    Assembly::PerChannel,
    64,
);

impl FinalizeStatsBindings {
    /// Records one workgroup per channel (`channel_grid` from the plan).
    pub fn encode(&self, rec: &mut Recorder<'_, '_>, channel_grid: [u32; 2]) {
        rec.dispatch(self, Statistics::Batch, channel_grid);
    }
}

#[cfg(test)]
mod tests {
    use super::FinalizeStatsBindings;
    use crate::ops::plan::grid;
    use crate::ops::testing::{close, context, read, run, values};
    use crate::reference::{finalize_stats, welford_partials, Partial};
    use crate::workspace::Workspace;
    use crate::Tensor;

    /// Partials of uneven chunks of each channel, merged on the GPU, match the oracle.
    #[test]
    fn finalize_stats_matches_its_oracle() {
        let ctx = context(None);
        let (c, tasks, per_task) = (5usize, 7usize, 13usize);
        let x = values(c * tasks * per_task, 3, -4.0, 9.0);
        let mut partials: Vec<Vec<Partial>> = Vec::new();
        let mut flat = Vec::new();
        for ch in 0..c {
            let values = &x[ch * tasks * per_task..(ch + 1) * tasks * per_task];
            // Uneven chunks, one of them empty.
            let cuts = [0, 1, 1, 20, 40, 41, 70, tasks * per_task];
            let list: Vec<Partial> = cuts
                .windows(2)
                .map(|w| welford_partials(&values[w[0]..w[1]]))
                .collect();
            for p in &list {
                flat.extend([p.0 as f32, p.1 as f32, p.2 as f32, 0.0]);
            }
            partials.push(list);
        }
        let count = tasks * per_task;
        let partials_t = Tensor::from_slice(&ctx, &flat, &[flat.len()]).unwrap();
        let out: Vec<Tensor> = (0..3).map(|_| Tensor::empty(&ctx, &[c]).unwrap()).collect();
        let mut ws = Workspace::new(&ctx);
        let op = FinalizeStatsBindings {
            chan: ws.channel_params(c as u32, tasks as u64, count as u32, 1e-3),
            partials: partials_t.slot(),
            save_mean: out[0].slot(),
            save_invstd: out[1].slot(),
            m2: out[2].slot(),
        };
        run(&ctx, &mut ws, |rec| op.encode(rec, grid(c as u64, 65535)));
        let got: Vec<Vec<f32>> = out.iter().map(|t| read(&ctx, t.buffer(), c)).collect();
        for ch in 0..c {
            let (mean, invstd, m2) = finalize_stats(&partials[ch], count, 1e-3);
            assert!(
                close(got[0][ch], mean, 1e-6),
                "mean {ch}: {} {mean}",
                got[0][ch]
            );
            assert!(
                close(got[1][ch], invstd, 1e-5),
                "invstd {ch}: {} {invstd}",
                got[1][ch]
            );
            assert!(close(got[2][ch], m2, 1e-5), "M2 {ch}: {} {m2}", got[2][ch]);
        }
    }
}
