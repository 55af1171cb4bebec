//! PyTorch checkpoints: the fixture's f32 and f16 files replayed layer by layer, bad files and
//! keys as typed errors that load nothing, and files saved by the crate in the form PyTorch
//! writes and reads.

mod support;

use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;
use support::state_dict::replay;
use wgpu_batchnorm::state_dict::{list_layers, load, save};
use wgpu_batchnorm::{BatchNorm, BatchNorm1d, BatchNorm2d, BatchNormOptions, Error};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/state_dict")
            .join(name),
    )
    .unwrap()
}

fn expected(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

#[test]
fn the_fixture_replays_from_f32_and_f16_files() {
    let ctx = support::context();
    for (file, json) in [
        ("model.safetensors", "model.expected.json"),
        ("model_f16.safetensors", "model_f16.expected.json"),
    ] {
        let reports = replay(&ctx, &fixture(file), &expected(json)).unwrap();
        assert_eq!(reports.len(), 7, "{file}");
        for r in &reports {
            println!("{file}: {}", r.line());
            assert!(r.passed(), "{file}: {}", r.line());
        }
    }
}

/// Loading one layer's state into another's place fails the replay: the checks see the
/// loaded values.
#[test]
fn the_replay_is_not_vacuous() {
    let ctx = support::context();
    let mut json = expected("model.expected.json");
    let layers = json["layers"].as_array_mut().unwrap();
    let i = layers
        .iter()
        .position(|l| l["prefix"] == "layer1.0.bn1.")
        .unwrap();
    layers[i]["prefix"] = "layer1.0.downsample.1.".into();
    let reports = replay(&ctx, &fixture("model.safetensors"), &json).unwrap();
    assert!(!reports[i].passed(), "{}", reports[i].line());
}

#[test]
fn layers_are_listed_from_the_file_alone() {
    let layers = list_layers(&fixture("model.safetensors")).unwrap();
    let summary: Vec<(String, usize, bool, bool)> = layers
        .into_iter()
        .map(|l| (l.prefix, l.num_features, l.affine, l.tracked))
        .collect();
    let want = [
        ("head.bn.", 64, true, true),
        ("layer1.0.bn1.", 32, true, true),
        ("layer1.0.bn2.", 32, true, true),
        ("layer1.0.downsample.1.", 32, true, true),
        ("stem.bn.", 16, true, true),
        ("volume.bn.", 4, false, true),
    ];
    let want: Vec<(String, usize, bool, bool)> = want
        .iter()
        .map(|&(p, c, a, t)| (p.to_string(), c, a, t))
        .collect();
    assert_eq!(summary, want);
}

/// A file of the given tensors.
fn file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, d, s, b)| (k.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

type ModuleState = (
    Option<Vec<f32>>,
    Option<Vec<f32>>,
    Option<Vec<f32>>,
    Option<Vec<f32>>,
    Option<u64>,
);

fn state(bn: &BatchNorm) -> ModuleState {
    (
        bn.weight().unwrap(),
        bn.bias().unwrap(),
        bn.running_mean().unwrap(),
        bn.running_var().unwrap(),
        bn.num_batches_tracked().unwrap(),
    )
}

#[test]
fn bad_files_and_keys_are_typed_errors_that_load_nothing() {
    let ctx = support::context();
    let mut bn = BatchNorm2d::new(&ctx, 3).unwrap();
    let before = state(&bn);
    let good = |extra: Vec<(&'static str, Dtype, Vec<usize>, Vec<u8>)>| {
        let mut t = vec![
            ("m.weight", Dtype::F32, vec![3], f32_bytes(&[1.0, 2.0, 3.0])),
            ("m.bias", Dtype::F32, vec![3], f32_bytes(&[0.5; 3])),
            ("m.running_mean", Dtype::F32, vec![3], f32_bytes(&[0.1; 3])),
            ("m.running_var", Dtype::F32, vec![3], f32_bytes(&[2.0; 3])),
            (
                "m.num_batches_tracked",
                Dtype::I64,
                vec![],
                7i64.to_le_bytes().to_vec(),
            ),
        ];
        for e in extra {
            t.retain(|x| x.0 != e.0);
            if e.1 != Dtype::BOOL {
                t.push(e);
            }
        }
        file(&t)
    };
    let valid = good(vec![]);
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "not safetensors",
            b"{\"hello\": 1}".to_vec(),
            "m.",
            "(file)",
        ),
        (
            "truncated",
            valid[..valid.len() - 5].to_vec(),
            "m.",
            "(file)",
        ),
        (
            "wrong dtype",
            good(vec![("m.weight", Dtype::I32, vec![3], vec![0; 12])]),
            "m.",
            "m.weight",
        ),
        (
            "wrong shape",
            good(vec![("m.bias", Dtype::F32, vec![4], f32_bytes(&[0.0; 4]))]),
            "m.",
            "m.bias",
        ),
        (
            "missing key",
            good(vec![("m.running_var", Dtype::BOOL, vec![], vec![])]),
            "m.",
            "m.running_var",
        ),
        (
            "unexpected key",
            good(vec![("m.extra", Dtype::F32, vec![1], f32_bytes(&[0.0]))]),
            "m.",
            "m.extra",
        ),
        (
            "negative count",
            good(vec![(
                "m.num_batches_tracked",
                Dtype::I64,
                vec![],
                (-1i64).to_le_bytes().to_vec(),
            )]),
            "m.",
            "m.num_batches_tracked",
        ),
        (
            "prefix matches nothing",
            valid.clone(),
            "layer9.",
            "layer9.",
        ),
    ];
    for (what, bytes, prefix, key) in cases {
        let err = load(&mut bn, &bytes, prefix, true).unwrap_err();
        match &err {
            Error::StateDict { key: k, .. } => assert_eq!(k, key, "{what}: {err}"),
            other => panic!("{what}: {other}"),
        }
        assert!(err.to_string().contains(key), "{what}: {err}");
        assert_eq!(err.torch_kind(), Some("RuntimeError"));
        assert_eq!(state(&bn), before, "{what}: something was loaded");
    }

    // Non-strict: a missing key and an unexpected one are fine, a wrong shape is not.
    let partial = good(vec![
        ("m.running_var", Dtype::BOOL, vec![], vec![]),
        ("m.extra", Dtype::F32, vec![1], f32_bytes(&[0.0])),
    ]);
    let keys = load(&mut bn, &partial, "m.", false).unwrap();
    assert_eq!(keys.len(), 4);
    assert_eq!(bn.weight().unwrap().unwrap(), vec![1.0, 2.0, 3.0]);
    assert_eq!(bn.running_var().unwrap().unwrap(), vec![1.0; 3], "kept");
    assert_eq!(bn.num_batches_tracked().unwrap(), Some(7));
    let wrong = good(vec![("m.bias", Dtype::F32, vec![4], f32_bytes(&[0.0; 4]))]);
    assert!(matches!(
        load(&mut bn, &wrong, "m.", false),
        Err(Error::StateDict { .. })
    ));
}

/// bf16, f16 and f64 values are converted to f32 (exactly where they fit).
#[test]
fn stored_dtypes_are_converted_to_f32() {
    let ctx = support::context();
    let mut bn = BatchNorm1d::with_options(
        &ctx,
        2,
        BatchNormOptions {
            track_running_stats: false,
            ..Default::default()
        },
    )
    .unwrap();
    let weight: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    let bias: Vec<u8> = [0.25f64, 1e-3]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let halves: Vec<u8> = [0.5f32, 3.0]
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    // Keys at the top level: the empty prefix.
    let top = file(&[
        ("weight", Dtype::BF16, vec![2], weight),
        ("bias", Dtype::F64, vec![2], bias),
    ]);
    load(&mut bn, &top, "", true).unwrap();
    assert_eq!(bn.weight().unwrap().unwrap(), vec![1.5, -2.0]);
    assert_eq!(bn.bias().unwrap().unwrap(), vec![0.25, 1e-3f64 as f32]);
    let f16_file = file(&[
        ("weight", Dtype::F16, vec![2], halves),
        ("bias", Dtype::F32, vec![2], f32_bytes(&[0.0; 2])),
    ]);
    bn.load_state_dict(&f16_file, "", true).unwrap();
    assert_eq!(bn.weight().unwrap().unwrap(), vec![0.5, 3.0]);
}

/// Every layer of the fixture loaded and saved back gives a file whose batch-norm keys,
/// dtypes and shapes are the ones PyTorch wrote (float32 tensors, 0-d int64 counters), and
/// which loads back to the same values.
#[test]
fn saved_files_have_pytorchs_keys_dtypes_and_shapes() {
    let ctx = support::context();
    let original = fixture("model.safetensors");
    let json = expected("model.expected.json");
    let mut modules: Vec<(String, BatchNorm)> = Vec::new();
    for layer in json["layers"].as_array().unwrap() {
        let prefix = layer["prefix"].as_str().unwrap().to_string();
        let c = layer["num_features"].as_u64().unwrap() as usize;
        let options = BatchNormOptions {
            eps: layer["eps"].as_f64().unwrap(),
            momentum: layer["momentum"].as_f64(),
            affine: layer["affine"].as_bool().unwrap(),
            track_running_stats: layer["track_running_stats"].as_bool().unwrap(),
        };
        let flavor = match layer["module"].as_str().unwrap() {
            "BatchNorm1d" => wgpu_batchnorm::Flavor::OneD,
            "BatchNorm2d" => wgpu_batchnorm::Flavor::TwoD,
            _ => wgpu_batchnorm::Flavor::ThreeD,
        };
        let mut bn = BatchNorm::new(&ctx, flavor, c, options).unwrap();
        load(&mut bn, &original, &prefix, true).unwrap();
        modules.push((prefix, bn));
    }
    let refs: Vec<(&str, &BatchNorm)> = modules.iter().map(|(p, m)| (p.as_str(), m)).collect();
    let saved = save(&refs).unwrap();
    let st = safetensors::SafeTensors::deserialize(&saved).unwrap();
    let mut got: Vec<(String, String, Vec<usize>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let dtype = match v.dtype() {
                Dtype::F32 => "float32",
                Dtype::I64 => "int64",
                _ => "other",
            };
            (k, dtype.to_string(), v.shape().to_vec())
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String, Vec<usize>)> = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key"].as_str().unwrap().to_string(),
                k["dtype"].as_str().unwrap().to_string(),
                k["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect(),
            )
        })
        .filter(|(k, _, _)| refs.iter().any(|(p, _)| k.starts_with(p)))
        .collect();
    want.sort();
    assert_eq!(got, want);
    // Values round-trip exactly, the original file's and the saved one's alike.
    for (prefix, bn) in &modules {
        let mut again = BatchNorm::new(&ctx, bn.flavor(), bn.num_features(), bn.options()).unwrap();
        again.load_state_dict(&saved, prefix, true).unwrap();
        assert_eq!(state(&again), state(bn), "{prefix}");
    }
}

/// Every option combination saves and loads back strictly, bit for bit, into a fresh module
/// of the same options (`load_state_dict(state_dict())` always works in PyTorch), alone in a
/// file and beside another module's keys.
#[test]
fn every_option_combination_round_trips_strictly() {
    let ctx = support::context();
    for affine in [false, true] {
        for track_running_stats in [false, true] {
            for momentum in [Some(0.1), None] {
                let options = BatchNormOptions {
                    affine,
                    track_running_stats,
                    momentum,
                    ..Default::default()
                };
                let what = format!("{options:?}");
                let mut bn = BatchNorm2d::with_options(&ctx, 5, options).unwrap();
                if affine {
                    // Values whose bits a lossy path would change: a subnormal, -0, a NaN.
                    bn.set_weight(&[1.5, -0.0, f32::from_bits(1), 3.25e7, f32::NAN])
                        .unwrap();
                    bn.set_bias(&[0.1, 0.2, -0.3, 1e-30, -7.0]).unwrap();
                }
                let x: Vec<f32> = (0..2 * 5 * 3).map(|i| (i as f32 * 0.7).sin()).collect();
                bn.forward(&wgpu_batchnorm::Tensor::from_slice(&ctx, &x, &[2, 5, 3, 1]).unwrap())
                    .unwrap();
                let bits = |s: ModuleState| {
                    let b = |v: Option<Vec<f32>>| {
                        v.map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
                    };
                    (b(s.0), b(s.1), b(s.2), b(s.3), s.4)
                };
                let alone = bn.state_dict("bn.").unwrap();
                let other = BatchNorm1d::new(&ctx, 2).unwrap();
                let beside = save(&[("other.", &other), ("bn.", &bn)]).unwrap();
                for (file, bytes) in [("alone", &alone), ("beside another module", &beside)] {
                    let mut again = BatchNorm2d::with_options(&ctx, 5, options).unwrap();
                    let keys = again.load_state_dict(bytes, "bn.", true).unwrap();
                    let expected_keys =
                        2 * usize::from(affine) + 3 * usize::from(track_running_stats);
                    assert_eq!(keys.len(), expected_keys, "{what} {file}");
                    assert_eq!(bits(state(&again)), bits(state(&bn)), "{what} {file}");
                }
            }
        }
    }
}

/// A strict load without `num_batches_tracked` is accepted, as
/// `_BatchNorm._load_from_state_dict` fills it in for state dicts without version metadata
/// (every safetensors file): the module keeps its own count.
#[test]
fn a_missing_num_batches_tracked_keeps_the_modules_count() {
    let ctx = support::context();
    let mut bn = BatchNorm2d::new(&ctx, 3).unwrap();
    bn.set_num_batches_tracked(41).unwrap();
    let bytes = file(&[
        ("m.weight", Dtype::F32, vec![3], f32_bytes(&[1.0, 2.0, 3.0])),
        ("m.bias", Dtype::F32, vec![3], f32_bytes(&[0.5; 3])),
        ("m.running_mean", Dtype::F32, vec![3], f32_bytes(&[0.1; 3])),
        ("m.running_var", Dtype::F32, vec![3], f32_bytes(&[2.0; 3])),
    ]);
    let keys = load(&mut bn, &bytes, "m.", true).unwrap();
    assert_eq!(keys.len(), 4);
    assert_eq!(bn.num_batches_tracked().unwrap(), Some(41));
    assert_eq!(bn.weight().unwrap().unwrap(), vec![1.0, 2.0, 3.0]);
    assert_eq!(bn.running_var().unwrap().unwrap(), vec![2.0; 3]);
    // Any other missing key still is an error, and loads nothing.
    let no_var = file(&[
        ("m.weight", Dtype::F32, vec![3], f32_bytes(&[9.0; 3])),
        ("m.bias", Dtype::F32, vec![3], f32_bytes(&[9.0; 3])),
        ("m.running_mean", Dtype::F32, vec![3], f32_bytes(&[9.0; 3])),
    ]);
    let err = load(&mut bn, &no_var, "m.", true).unwrap_err();
    assert!(
        matches!(&err, Error::StateDict { key, .. } if key == "m.running_var"),
        "{err}"
    );
    assert_eq!(bn.weight().unwrap().unwrap(), vec![1.0, 2.0, 3.0]);
}
