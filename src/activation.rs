//! The activation a batch norm may be fused with, and its f64 math (the reference and the
//! tests differentiate through it; the kernels' f32 math is `shaders/pieces/epilogue.wgsl`).

/// The activation applied after batch norm (and the residual add): `y = act(bn(x) [+ r])`.
/// The backward flows through it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Activation {
    /// No activation.
    #[default]
    Identity,
    /// `max(z, 0)`.
    Relu,
    /// `min(max(z, 0), 6)`.
    Relu6,
    /// `z * sigmoid(z)`.
    Silu,
    /// `z` where `z > 0`, else `slope * z` (PyTorch's default slope is 0.01).
    LeakyRelu(f32),
}

impl Activation {
    /// `ACT` in `shaders/pieces/epilogue.wgsl`.
    pub(crate) fn code(self) -> u32 {
        match self {
            Activation::Identity => 0,
            Activation::Relu => 1,
            Activation::Relu6 => 2,
            Activation::Silu => 3,
            Activation::LeakyRelu(_) => 4,
        }
    }

    /// The reference's activation, `act(z)`, in f64.
    pub fn apply(self, z: f64) -> f64 {
        match self {
            Activation::Identity => z,
            Activation::Relu => z.max(0.0),
            Activation::Relu6 => z.clamp(0.0, 6.0),
            Activation::Silu => z / (1.0 + (-z).exp()),
            Activation::LeakyRelu(slope) => {
                if z > 0.0 {
                    z
                } else {
                    f64::from(slope) * z
                }
            }
        }
    }

    /// The reference's derivative, `act'(z)`, in f64 (PyTorch's choice at the kinks).
    pub fn derivative(self, z: f64) -> f64 {
        match self {
            Activation::Identity => 1.0,
            Activation::Relu => f64::from(u8::from(z > 0.0)),
            Activation::Relu6 => f64::from(u8::from(z > 0.0 && z < 6.0)),
            Activation::Silu => {
                let s = 1.0 / (1.0 + (-z).exp());
                s * (1.0 + z * (1.0 - s))
            }
            Activation::LeakyRelu(slope) => {
                if z > 0.0 {
                    1.0
                } else {
                    f64::from(slope)
                }
            }
        }
    }
}
