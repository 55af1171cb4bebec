//! PyTorch checkpoints: batch-norm layers of a `state_dict` saved with
//! `safetensors.torch.save_file(model.state_dict(), path)`, loaded into modules, listed, and
//! saved back in a form `safetensors.torch.load_file` + `model.load_state_dict` accept.
//!
//! Keys are `prefix + name` with the names PyTorch uses: `weight`, `bias` (affine layers),
//! `running_mean`, `running_var` and `num_batches_tracked` (a 0-d int64; tracked layers).
//! Stored f32, f16, bf16 and f64 tensors are converted to the module's f32. A state_dict holds
//! no `eps` or `momentum`: build the module with them, then load.
//!
//! ```no_run
//! use wgpu_batchnorm::state_dict::{list_layers, load};
//! use wgpu_batchnorm::{BatchNorm2d, Context};
//! let ctx = Context::new()?;
//! let bytes = std::fs::read("model.safetensors").expect("a checkpoint");
//! for layer in list_layers(&bytes)? {
//!     println!("{} num_features={} affine={}", layer.prefix, layer.num_features, layer.affine);
//! }
//! let mut bn = BatchNorm2d::new(&ctx, 32)?;
//! load(&mut bn, &bytes, "layer1.0.bn1.", true)?; // strict, like load_state_dict
//! # Ok::<(), wgpu_batchnorm::Error>(())
//! ```

use std::collections::BTreeMap;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::batchnorm::BatchNorm;
use crate::error::{Error, Result};

/// A batch-norm layer found in a checkpoint by its running buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// The keys' common prefix, e.g. `"layer1.0.bn1."`.
    pub prefix: String,
    /// The channel count (the length of `running_mean`).
    pub num_features: usize,
    /// Whether the layer has `weight` and `bias`.
    pub affine: bool,
    /// Whether the layer has `num_batches_tracked`.
    pub tracked: bool,
}

fn bad(key: &str, message: impl Into<String>) -> Error {
    Error::StateDict {
        key: key.to_string(),
        message: message.into(),
    }
}

fn parse(bytes: &[u8]) -> Result<SafeTensors<'_>> {
    SafeTensors::deserialize(bytes)
        .map_err(|e| bad("(file)", format!("not a safetensors file: {e}")))
}

/// The batch-norm layers of a checkpoint: every prefix with both `running_mean` and
/// `running_var`, in key order. Layers without running buffers (`track_running_stats =
/// False`) hold only `weight` and `bias`, which keys alone cannot tell from another layer's:
/// name those yourself.
pub fn list_layers(bytes: &[u8]) -> Result<Vec<LayerInfo>> {
    let st = parse(bytes)?;
    let names: Vec<&str> = st.names();
    let has = |k: &str| names.contains(&k);
    let mut layers = Vec::new();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    for name in sorted {
        let Some(prefix) = name.strip_suffix("running_mean") else {
            continue;
        };
        if !has(&format!("{prefix}running_var")) {
            continue;
        }
        let view = st.tensor(name).map_err(|e| bad(name, e.to_string()))?;
        let [num_features] = view.shape() else {
            return Err(bad(name, format!("shape {:?} is not [C]", view.shape())));
        };
        layers.push(LayerInfo {
            prefix: prefix.to_string(),
            num_features: *num_features,
            affine: has(&format!("{prefix}weight")) && has(&format!("{prefix}bias")),
            tracked: has(&format!("{prefix}num_batches_tracked")),
        });
    }
    Ok(layers)
}

/// The f32 values of a floating tensor.
fn floats(key: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let data = view.data();
    let words = |n: usize| data.chunks_exact(n);
    Ok(match view.dtype() {
        Dtype::F32 => words(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => words(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => words(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => words(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        other => {
            return Err(bad(
                key,
                format!("dtype {other:?}, expected a floating type (F32, F16, BF16, F64)"),
            ))
        }
    })
}

/// The value of a 0-d (or one-element) integer tensor.
fn count(key: &str, view: &TensorView<'_>) -> Result<u64> {
    if view.shape().iter().product::<usize>() != 1 {
        return Err(bad(
            key,
            format!("shape {:?}, expected a scalar", view.shape()),
        ));
    }
    let d = view.data();
    let value: i128 = match view.dtype() {
        Dtype::I64 => i64::from_le_bytes(d.try_into().unwrap_or([0; 8])).into(),
        Dtype::U64 => u64::from_le_bytes(d.try_into().unwrap_or([0; 8])).into(),
        Dtype::I32 => i32::from_le_bytes(d.try_into().unwrap_or([0; 4])).into(),
        Dtype::U32 => u32::from_le_bytes(d.try_into().unwrap_or([0; 4])).into(),
        other => return Err(bad(key, format!("dtype {other:?}, expected an integer"))),
    };
    u64::try_from(value).map_err(|_| bad(key, format!("negative count {value}")))
}

/// What a load will write, checked in full before anything is.
#[derive(Default)]
struct Loaded {
    weight: Option<Vec<f32>>,
    bias: Option<Vec<f32>>,
    running_mean: Option<Vec<f32>>,
    running_var: Option<Vec<f32>>,
    num_batches_tracked: Option<u64>,
}

/// Loads the keys under `prefix` into `module`, like `module.load_state_dict(sd, strict)` on
/// the sub-dict of that prefix. Strict: every key the module has must be there and no other
/// key may start with `prefix`; as in `_BatchNorm._load_from_state_dict` for a state dict
/// without version metadata (every safetensors file), a missing `num_batches_tracked` is not
/// an error and the module keeps its count. A module with no parameters and no buffers
/// (`affine = false`, `track_running_stats = false`) loads any file that has no key under
/// its prefix, as PyTorch loads its empty state dict. Either way, a key of the wrong shape or
/// dtype is an error (as in PyTorch), and on any error nothing is loaded. Returns the keys
/// loaded.
pub fn load(
    module: &mut BatchNorm,
    bytes: &[u8],
    prefix: &str,
    strict: bool,
) -> Result<Vec<String>> {
    let st = parse(bytes)?;
    let c = module.num_features();
    let options = module.options();
    let mut wanted: Vec<&str> = Vec::new();
    if options.affine {
        wanted.extend(["weight", "bias"]);
    }
    if options.track_running_stats {
        wanted.extend(["running_mean", "running_var", "num_batches_tracked"]);
    }
    let under: Vec<&str> = st
        .names()
        .into_iter()
        .filter(|k| k.starts_with(prefix))
        .collect();
    // PyTorch reports this as the module's keys all missing; naming the prefix is clearer.
    if under.is_empty() && strict && !wanted.is_empty() {
        return Err(bad(
            prefix,
            format!(
                "no key starts with this prefix (missing keys: {})",
                wanted
                    .iter()
                    .map(|k| format!("{prefix}{k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if strict {
        let mut unexpected: Vec<&str> = under
            .iter()
            .copied()
            .filter(|k| !wanted.contains(&&k[prefix.len()..]))
            .collect();
        unexpected.sort_unstable();
        if let Some(k) = unexpected.first() {
            return Err(bad(
                k,
                format!("unexpected key(s) in state_dict: {}", unexpected.join(", ")),
            ));
        }
    }
    let mut loaded = Loaded::default();
    let mut keys = Vec::new();
    for name in wanted {
        let key = format!("{prefix}{name}");
        let view = match st.tensor(&key) {
            Ok(v) => v,
            Err(_) if !strict => continue,
            // `_BatchNorm._load_from_state_dict` fills a missing num_batches_tracked in with
            // the module's own when the state dict has no version metadata, which a
            // safetensors file never has: the module keeps its count.
            Err(_) if name == "num_batches_tracked" => continue,
            Err(_) => return Err(bad(&key, "missing key in state_dict")),
        };
        if name == "num_batches_tracked" {
            loaded.num_batches_tracked = Some(count(&key, &view)?);
        } else {
            if view.shape() != [c] {
                return Err(bad(
                    &key,
                    format!(
                        "size mismatch: copying a param with shape {:?} from checkpoint, the \
                         shape in current model is [{c}]",
                        view.shape()
                    ),
                ));
            }
            let values = floats(&key, &view)?;
            let slot = match name {
                "weight" => &mut loaded.weight,
                "bias" => &mut loaded.bias,
                "running_mean" => &mut loaded.running_mean,
                _ => &mut loaded.running_var,
            };
            *slot = Some(values);
        }
        keys.push(key);
    }
    if let Some(v) = &loaded.weight {
        module.set_weight(v)?;
    }
    if let Some(v) = &loaded.bias {
        module.set_bias(v)?;
    }
    if let Some(v) = &loaded.running_mean {
        module.set_running_mean(v)?;
    }
    if let Some(v) = &loaded.running_var {
        module.set_running_var(v)?;
    }
    if let Some(v) = loaded.num_batches_tracked {
        module.set_num_batches_tracked(v)?;
    }
    Ok(keys)
}

/// One tensor to write: its dtype, shape and little-endian bytes.
struct Owned {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// A safetensors file with the state of each `(prefix, module)`: f32 `weight`, `bias`,
/// `running_mean`, `running_var` and a 0-d int64 `num_batches_tracked`, as
/// `safetensors.torch.save_file(model.state_dict())` writes them, so that
/// `model.load_state_dict(safetensors.torch.load_file(path))` accepts it. Reads the modules'
/// buffers back (blocks; native only).
#[cfg(not(target_arch = "wasm32"))]
pub fn save(modules: &[(&str, &BatchNorm)]) -> Result<Vec<u8>> {
    crate::device::block_on(save_async(modules))
}

/// Async form of [`save`].
pub async fn save_async(modules: &[(&str, &BatchNorm)]) -> Result<Vec<u8>> {
    let mut tensors: BTreeMap<String, Owned> = BTreeMap::new();
    let f32s = |v: Vec<f32>| Owned {
        dtype: Dtype::F32,
        shape: vec![v.len()],
        data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    };
    for &(prefix, module) in modules {
        let pairs = [
            ("weight", module.weight_async().await?),
            ("bias", module.bias_async().await?),
            ("running_mean", module.running_mean_async().await?),
            ("running_var", module.running_var_async().await?),
        ];
        for (name, values) in pairs {
            if let Some(v) = values {
                tensors.insert(format!("{prefix}{name}"), f32s(v));
            }
        }
        if let Some(n) = module.num_batches_tracked_async().await? {
            // PyTorch's counter is an int64; a larger count has no faithful file form.
            let n = i64::try_from(n).map_err(|_| {
                bad(
                    &format!("{prefix}num_batches_tracked"),
                    format!("{n} does not fit the int64 that PyTorch stores"),
                )
            })?;
            tensors.insert(
                format!("{prefix}num_batches_tracked"),
                Owned {
                    dtype: Dtype::I64,
                    shape: Vec::new(),
                    data: n.to_le_bytes().to_vec(),
                },
            );
        }
    }
    let views = tensors
        .iter()
        .map(|(k, t)| {
            TensorView::new(t.dtype, t.shape.clone(), &t.data)
                .map(|v| (k.clone(), v))
                .map_err(|e| bad(k, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| bad("(file)", e.to_string()))
}

/// The module's PyTorch-named checkpoint calls, written here beside the format so that the
/// module layer does not import this leaf.
impl BatchNorm {
    /// Loads this module's keys under `prefix` from a safetensors checkpoint, like
    /// `module.load_state_dict(sd, strict)`; see [`crate::state_dict::load`].
    pub fn load_state_dict(
        &mut self,
        safetensors: &[u8],
        prefix: &str,
        strict: bool,
    ) -> Result<Vec<String>> {
        load(self, safetensors, prefix, strict)
    }

    /// This module's state as a safetensors file, its keys under `prefix`, like
    /// `safetensors.torch.save_file(module.state_dict())`; see [`crate::state_dict::save`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn state_dict(&self, prefix: &str) -> Result<Vec<u8>> {
        save(&[(prefix, self)])
    }

    /// Async form of [`BatchNorm::state_dict`].
    pub async fn state_dict_async(&self, prefix: &str) -> Result<Vec<u8>> {
        save_async(&[(prefix, self)]).await
    }
}
