//! Host side of `shaders/stream.wgsl`: `y = x` through the tensor kernels' walk, the
//! benchmark's second floor (`crate::bench::StreamKernel`). CPU oracle: the identity.

use super::{bindings, Assembly, KernelSpec, PreparedPlan, Recorder, Statistics};

bindings! {
    /// The bindings of `stream.wgsl`.
    StreamBindings for Stream, per_block geo {
        /// The input, (N, C, S).
        x: Read Window "array<Item>",
        /// The output, same shape (written).
        y: ReadWrite Window "array<Item>",
    }
}

pub(crate) const SPEC: KernelSpec = KernelSpec::new(
    "stream",
    include_str!("../../shaders/stream.wgsl"),
    StreamBindings::SPEC,
    Assembly::TensorMap,
    0,
);

impl StreamBindings {
    /// Records one dispatch per block of `prepared`.
    pub fn encode(&self, rec: &mut Recorder<'_, '_>, prepared: &PreparedPlan) {
        rec.dispatch_blocks(self, prepared, Statistics::Batch);
    }
}

#[cfg(test)]
mod tests {
    use super::StreamBindings;
    use crate::ops::testing::{on_every_walk, prepare, read, run, tensor, values, SHAPES};
    use crate::Tensor;

    /// y equals x bit for bit on every walk.
    #[test]
    fn stream_copies_exactly_on_every_walk() {
        on_every_walk(&SHAPES, |ctx, what, seed, (n, c, s)| {
            let x = values(n * c * s, 300 + seed, -5.0, 7.0);
            let y = Tensor::empty(ctx, &[n, c, s]).unwrap();
            let (mut ws, prepared) = prepare(ctx, (n, c, s));
            let op = StreamBindings {
                x: tensor(ctx, &x, &[n, c, s]).slot(),
                y: y.slot(),
            };
            run(ctx, &mut ws, |rec| op.encode(rec, &prepared));
            assert_eq!(read(ctx, y.buffer(), x.len()), x, "{what}");
        });
    }
}
