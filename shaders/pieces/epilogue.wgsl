// The activation a normalize pass applies after the affine transform and the residual add,
// `y = act(z)`, and its backward, `dz = dy * act'(z)`. Assembled after an item piece, for
// kernels whose spec has an epilogue; ACT is a pipeline constant, so the untaken cases are
// compiled away.
//
// ACT: 0 identity, 1 ReLU, 2 ReLU6, 3 SiLU, 4 LeakyReLU with slope LEAKY_SLOPE (the values of
// `Activation::code` in src/ops/mod.rs). Masks follow PyTorch's backward: ReLU passes the
// gradient where z > 0, ReLU6 (hardtanh) where 0 < z < 6, LeakyReLU scales it by the slope
// where z <= 0.

override ACT: u32 = 0u;
override LEAKY_SLOPE: f32 = 0.01;

const ACT_IDENTITY: u32 = 0u;
const ACT_RELU: u32 = 1u;
const ACT_RELU6: u32 = 2u;
const ACT_SILU: u32 = 3u;
const ACT_LEAKY: u32 = 4u;

fn activate(z: Item) -> Item {
    switch ACT {
        case ACT_RELU: {
            return max(z, Item(0.0));
        }
        case ACT_RELU6: {
            return clamp(z, Item(0.0), Item(6.0));
        }
        case ACT_SILU: {
            return z / (Item(1.0) + exp(-z));
        }
        case ACT_LEAKY: {
            return select(z * LEAKY_SLOPE, z, z > Item(0.0));
        }
        default: {
            return z;
        }
    }
}

fn activate_grad(z: Item, dy: Item) -> Item {
    switch ACT {
        case ACT_RELU: {
            return select(Item(0.0), dy, z > Item(0.0));
        }
        case ACT_RELU6: {
            return select(Item(0.0), dy, (z > Item(0.0)) & (z < Item(6.0)));
        }
        case ACT_SILU: {
            let s = Item(1.0) / (Item(1.0) + exp(-z));
            return dy * s * (Item(1.0) + z * (Item(1.0) - s));
        }
        case ACT_LEAKY: {
            return select(dy * LEAKY_SLOPE, dy, z > Item(0.0));
        }
        default: {
            return dy;
        }
    }
}
