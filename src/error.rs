//! The crate's error type.

use std::fmt;

/// Everything that can go wrong in this crate.
///
/// Input errors mirror the checks PyTorch makes (see [`Error::torch_kind`]); when a call returns
/// one of them, no state has changed: running statistics and `num_batches_tracked` are untouched.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// No GPU adapter was found.
    NoAdapter {
        /// What was asked for (backends, adapter name).
        requested: String,
    },
    /// `WGPU_ADAPTER_NAME` (or [`crate::ContextOptions::adapter_name`]) matched no adapter.
    AdapterNotFound {
        /// The name that was asked for.
        name: String,
        /// The adapters that exist, as "name (backend)".
        available: Vec<String>,
    },
    /// `request_device` failed.
    RequestDevice(String),
    /// The input has the wrong number of dimensions for the module
    /// (torch: `ValueError: expected 4D input (got 3D input)`).
    InvalidRank {
        /// "BatchNorm1d", "BatchNorm2d" or "BatchNorm3d".
        module: &'static str,
        /// What the module accepts, e.g. "2D or 3D".
        expected: &'static str,
        /// The input's number of dimensions.
        got: usize,
    },
    /// The input's channel count differs from `num_features`
    /// (torch: `RuntimeError: running_mean should contain 4 elements not 3`).
    ChannelMismatch {
        /// The parameter torch names: "running_mean" or "weight".
        what: &'static str,
        /// The input's channel count (dimension 1).
        input_channels: usize,
        /// The module's `num_features`.
        num_features: usize,
    },
    /// Batch statistics need more than one value per channel
    /// (torch: `ValueError: Expected more than 1 value per channel when training, ...`).
    TooFewValuesPerChannel {
        /// The input's shape.
        shape: Vec<usize>,
    },
    /// eps must be > 0 with batch statistics and >= 0 with running statistics
    /// (torch: `ValueError: batch_norm eps must be positive during training, but got 0.0`).
    InvalidEps {
        /// The module's eps.
        eps: f64,
        /// Whether batch statistics were used (eps must then be > 0).
        batch_stats: bool,
    },
    /// A tensor, buffer or slice does not have the shape or length the call needs.
    ShapeMismatch {
        /// What was being checked.
        what: String,
        /// The expected shape or length.
        expected: Vec<usize>,
        /// The shape or length that was given.
        got: Vec<usize>,
    },
    /// A wrapped buffer is too small, misaligned or lacks a usage flag.
    InvalidBuffer(String),
    /// The output tensor is the input tensor (or overlaps it); the kernels do not run in place.
    Aliasing,
    /// The tensor does not fit what the adapter can hold or bind.
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size in bytes.
        bytes: u64,
        /// The adapter's limit in bytes.
        limit: u64,
    },
    /// A wgpu validation, out-of-memory or internal error, captured instead of panicking.
    Wgpu(String),
    /// Mapping a buffer for readback, or waiting for the device, failed.
    Device(String),
    /// `backward` was called in a state where it cannot run.
    Backward(String),
    /// The module has no such parameter or buffer (e.g. `weight` with `affine = false`).
    NotAvailable(String),
    /// A tensor was made on another device than the call's context.
    WrongDevice(String),
    /// A functional call's arguments do not fit together (e.g. eval without running stats).
    InvalidArgument(String),
    /// A hyperparameter out of its range, where PyTorch raises `ValueError` (e.g.
    /// `torch.optim.SGD`'s "Invalid learning rate: -0.1").
    InvalidValue(String),
    /// A checkpoint (safetensors `state_dict`) cannot be loaded: a missing, unexpected or
    /// malformed key, or a file that is not safetensors. Nothing was loaded.
    StateDict {
        /// The key concerned (the prefix, or the file, when no single key is).
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor holds another element type than the call takes (see [`crate::DType`]).
    DTypeMismatch {
        /// The tensor that differs.
        what: String,
        /// The type the call takes there.
        expected: crate::DType,
        /// The tensor's.
        got: crate::DType,
    },
    /// Tensors that one call reads and writes element by element are stored in different
    /// memory orders (see [`crate::MemoryFormat`]).
    MemoryFormatMismatch {
        /// The tensor that differs.
        what: String,
        /// The input's memory format.
        expected: crate::MemoryFormat,
        /// The tensor's.
        got: crate::MemoryFormat,
    },
    /// A collective exchange failed (a rank that never joined within the wait, a malformed
    /// message): the group's state is not to be trusted.
    Collective(String),
    /// A SyncBN call that one rank of the group could not make (its input was invalid, or it
    /// disagrees with its peers on the module or the call): every rank returns this same error
    /// from the same exchange, and no rank's module changed.
    Rank {
        /// The first offending rank, in rank order.
        rank: usize,
        /// What is wrong there.
        reason: String,
    },
}

impl Error {
    /// The Python exception PyTorch raises for the same situation, if any:
    /// `Some("ValueError")` or `Some("RuntimeError")` for input errors, `None` for errors that
    /// have no PyTorch counterpart (device, buffers, ...).
    pub fn torch_kind(&self) -> Option<&'static str> {
        match self {
            Error::InvalidRank { .. }
            | Error::TooFewValuesPerChannel { .. }
            | Error::InvalidEps { .. }
            | Error::InvalidValue(_) => Some("ValueError"),
            Error::ChannelMismatch { .. }
            | Error::InvalidArgument(_)
            | Error::MemoryFormatMismatch { .. }
            | Error::DTypeMismatch { .. }
            | Error::StateDict { .. }
            | Error::Rank { .. } => Some("RuntimeError"),
            _ => None,
        }
    }
}

fn shape_str(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter { requested } => write!(
                f,
                "no GPU adapter found ({requested}). Install a Vulkan, Metal or DX12 driver; on \
                 Linux without a GPU install Mesa's lavapipe (`apt-get install \
                 mesa-vulkan-drivers libvulkan1`), or try WGPU_BACKEND=gl"
            ),
            Error::AdapterNotFound { name, available } => write!(
                f,
                "no adapter name contains {name:?} (WGPU_ADAPTER_NAME); available: {}",
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                }
            ),
            Error::RequestDevice(msg) => write!(f, "could not open the device: {msg}"),
            Error::InvalidRank {
                module,
                expected,
                got,
            } => write!(f, "{module}: expected {expected} input (got {got}D input)"),
            Error::ChannelMismatch {
                what,
                input_channels,
                num_features,
            } => write!(
                f,
                "{what} should contain {input_channels} elements not {num_features} (the input \
                 has {input_channels} channels, the module num_features = {num_features})"
            ),
            Error::TooFewValuesPerChannel { shape } => write!(
                f,
                "Expected more than 1 value per channel when training, got input size {}",
                shape_str(shape)
            ),
            Error::InvalidEps { eps, batch_stats } => {
                if *batch_stats {
                    write!(
                        f,
                        "batch_norm eps must be positive during training, but got {eps:?}"
                    )
                } else {
                    write!(f, "batch_norm eps must be non-negative, but got {eps:?}")
                }
            }
            Error::ShapeMismatch {
                what,
                expected,
                got,
            } => write!(
                f,
                "{what}: expected shape {}, got {}",
                shape_str(expected),
                shape_str(got)
            ),
            Error::InvalidBuffer(msg) => write!(f, "invalid buffer: {msg}"),
            Error::Aliasing => write!(
                f,
                "the output tensor aliases the input; batch norm does not run in place"
            ),
            Error::TooLarge { what, bytes, limit } => write!(
                f,
                "{what} needs {bytes} bytes, more than the adapter's limit of {limit} bytes"
            ),
            Error::Wgpu(msg) => write!(f, "wgpu error: {msg}"),
            Error::Device(msg) => write!(f, "device error: {msg}"),
            Error::Backward(msg) => write!(f, "backward: {msg}"),
            Error::NotAvailable(msg) => write!(f, "not available: {msg}"),
            Error::WrongDevice(msg) => write!(f, "wrong device: {msg}"),
            Error::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
            Error::InvalidValue(msg) => write!(f, "{msg}"),
            Error::DTypeMismatch {
                what,
                expected,
                got,
            } => write!(f, "{what}: expected {expected:?} data, got {got:?}"),
            Error::StateDict { key, message } => {
                write!(f, "Error(s) in loading state_dict: {key}: {message}")
            }
            Error::MemoryFormatMismatch {
                what,
                expected,
                got,
            } => write!(
                f,
                "{what} is stored {got:?}, the input {expected:?}; elementwise tensors of one \
                 call share the input's memory format"
            ),
            Error::Collective(msg) => write!(f, "collective: {msg}"),
            Error::Rank { rank, reason } => write!(f, "rank {rank}: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
