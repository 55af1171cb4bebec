//! The device layer: opening or wrapping a device ([`Context`]), waiting for it, moving data
//! between host and device through reused staging buffers, and the store where the op layer
//! keeps what it compiles per device. It imports no other layer of the crate.
//!
//! Inside, each file imports only those listed before it: `wait` (completion flags, the
//! blocking wait), `staging` (the reused staging buffers), `compiled` (the per-device store),
//! `context` (the device, its options and error scopes), `transfer` (uploads and readbacks).

mod compiled;
mod context;
mod staging;
mod transfer;
mod wait;

pub(crate) use compiled::{Compiled, Layouts};
pub(crate) use context::Shared;
pub use context::{AdapterReport, Context, ContextOptions, DEFAULT_WAIT_TIMEOUT};
#[cfg(feature = "bench")]
pub(crate) use transfer::read_bytes;
pub(crate) use transfer::{download, read_f32, upload};
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use wait::block_on;
pub(crate) use wait::blocking;
#[cfg(feature = "bench")]
pub(crate) use wait::submitted;
