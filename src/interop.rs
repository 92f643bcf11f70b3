//! PyTorch interop: a run's weights as a PyTorch-style state dict in safetensors, and back.
//!
//! Names and layouts follow PyTorch's modules (the twins in `python/elbo_torch/`): the network
//! enum's variant disappears from the path (`net.Unet.conv_in.weight` → `net.conv_in.weight`),
//! GroupNorm's `gamma`/`beta` are `weight`/`bias`, and Linear weights are stored `[out, in]`
//! (Burn keeps `[in, out]`); convolutions are `[out, in, kh, kw]` in both. The file's metadata
//! holds the run's `config.json` and `model.json`, so the Python side (and `elbo import`) can
//! rebuild the model without anything else.

use std::collections::HashMap;
use std::path::Path;

use crate::fsio::{load_tensors, tensor_bytes, write_atomic};
use crate::models::{Model, ModelVisitor};
use crate::params::{self, NamedParams, ParamValue};
use crate::run::RunConfig;
use crate::run::{RunDir, TrainState};
use crate::{Error, Result};

/// Enum variants that name a network choice, dropped from PyTorch names.
const VARIANTS: &[&str] = &["Unet", "Mlp", "Cnn"];

/// The PyTorch name of a parameter.
pub fn torch_name(burn: &str) -> String {
    let parts: Vec<&str> = burn.split('.').filter(|p| !VARIANTS.contains(p)).collect();
    let mut name = parts.join(".");
    for (from, to) in [(".gamma", ".weight"), (".beta", ".bias")] {
        if let Some(stem) = name.strip_suffix(from) {
            name = format!("{stem}{to}");
        }
    }
    name
}

/// Whether a parameter is a Linear weight (transposed between the two layouts).
fn is_linear_weight(burn: &str, shape: &[usize]) -> bool {
    shape.len() == 2 && burn.ends_with(".weight")
}

fn transpose(p: &ParamValue) -> ParamValue {
    let (r, c) = (p.shape[0], p.shape[1]);
    let mut data = vec![0f32; p.data.len()];
    for i in 0..r {
        for j in 0..c {
            data[j * r + i] = p.data[i * c + j];
        }
    }
    ParamValue {
        shape: vec![c, r],
        data,
    }
}

/// Burn-named parameters → PyTorch-named, PyTorch-laid-out ones.
pub fn to_torch(p: &NamedParams) -> NamedParams {
    p.iter()
        .map(|(k, v)| {
            let v = if is_linear_weight(k, &v.shape) {
                transpose(v)
            } else {
                v.clone()
            };
            (torch_name(k), v)
        })
        .collect()
}

/// Metadata keys of an exported file.
pub const META_CONFIG: &str = "elbo_config";
pub const META_MODEL: &str = "elbo_model";

/// Write the EMA weights of the run in `dir` to `out` as a PyTorch state dict; returns the
/// number of tensors.
pub fn export(dir: &RunDir, out: &Path, parity_rows: usize) -> Result<usize> {
    dir.check()?;
    crate::fsio::check_output_file(out)?;
    let p = dir.model_weights()?;
    let mut torch = to_torch(&p);
    if parity_rows > 0 {
        torch.extend(parity(dir, parity_rows, 0)?);
    }
    let read = |f: &str| {
        let path = dir.file(f);
        std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))
    };
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert(META_CONFIG.to_string(), read("config.json")?);
    meta.insert(META_MODEL.to_string(), read("model.json")?);
    meta.insert(
        "elbo_version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    if let Ok(s) = dir.state() {
        meta.insert("step".to_string(), s.step.to_string());
    }
    let bytes = tensor_bytes(out, &[("", &torch)], meta)?;
    write_atomic(out, &bytes)?;
    Ok(torch.len())
}

/// Where an import writes: the directory `out` names (through a symbolic link, its target),
/// which must be new or empty, in a folder that exists.
fn import_target(out: &Path) -> Result<std::path::PathBuf> {
    let target = match std::fs::symlink_metadata(out) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(out).map_err(|e| Error::io(out, e))?
        }
        _ => out.to_path_buf(),
    };
    if target.exists() {
        let empty = target.is_dir()
            && std::fs::read_dir(&target)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !empty {
            return Err(Error::Config(format!(
                "{}: exists and is not an empty directory; import into a new directory",
                out.display()
            )));
        }
    }
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(Error::Config(format!(
            "{}: its folder {} does not exist",
            out.display(),
            parent.display()
        )));
    }
    Ok(target)
}

/// Create a run directory `out` from an exported (or PyTorch-written) file: its config and
/// model files from the metadata, its weights checked name by name and shape by shape against
/// the model the config builds (its shapes read before any parameter exists, so a config that
/// claims a model larger than the file is refused without allocating it). The run is built in
/// a temporary folder beside `out` and renamed into place when whole: a failure leaves nothing
/// of its own behind and changes nothing that was there. Returns the number of tensors.
pub fn import(file: &Path, out: &RunDir) -> Result<usize> {
    let (tensors, meta) = load_tensors(file)?;
    let bad = |msg: String| Error::Checkpoint {
        path: file.into(),
        msg,
    };
    let config = meta.get(META_CONFIG).ok_or_else(|| {
        bad(format!(
            "no '{META_CONFIG}' metadata: not a file written by `elbo export` or by \
             elbo_torch.save (it names the model and its data)"
        ))
    })?;
    let model = meta
        .get(META_MODEL)
        .ok_or_else(|| bad(format!("no '{META_MODEL}' metadata")))?;
    let cfg: RunConfig = serde_json::from_str(config).map_err(|e| {
        bad(format!(
            "its '{META_CONFIG}' metadata is not a run configuration: {e}"
        ))
    })?;
    cfg.validate()
        .map_err(|e| bad(format!("its '{META_CONFIG}' metadata: {e}")))?;
    let mf: crate::run::ModelFile = serde_json::from_str(model).map_err(|e| {
        bad(format!(
            "its '{META_MODEL}' metadata is not a valid model description ({e})"
        ))
    })?;
    if mf.model != cfg.model.kind() {
        return Err(bad(format!(
            "its '{META_MODEL}' metadata is of a {} model, its config of a {}",
            mf.model,
            cfg.model.kind()
        )));
    }
    let target = import_target(&out.path)?;
    let step = meta.get("step").and_then(|s| s.parse().ok()).unwrap_or(0);
    // Check every tensor against the model before anything is written.
    struct Check<'a>(&'a NamedParams, &'a Path, &'a serde_json::Value);
    impl ModelVisitor for Check<'_> {
        type Output = Result<NamedParams>;
        fn visit<M: Model>(self, section: &M::Config) -> Self::Output {
            let (torch, file, spec) = (self.0, self.1, self.2);
            let spec: M::Spec =
                serde_json::from_value(spec.clone()).map_err(|e| Error::Checkpoint {
                    path: file.into(),
                    msg: format!("its '{META_MODEL}' metadata: the model spec does not fit: {e}"),
                })?;
            let m = M::build(section, &spec, &burn::tensor::Device::flex())?;
            let want = params::shapes(&m);
            let mut got = NamedParams::new();
            for (k, shape) in &want {
                let tn = torch_name(k);
                let linear = is_linear_weight(k, shape);
                let t = torch.get(&tn).ok_or_else(|| Error::Checkpoint {
                    path: file.into(),
                    msg: format!("no tensor '{tn}' (the model needs it for {k})"),
                })?;
                let torch_shape = if linear {
                    vec![shape[1], shape[0]]
                } else {
                    shape.clone()
                };
                if t.shape != torch_shape {
                    return Err(Error::Checkpoint {
                        path: file.into(),
                        msg: format!(
                            "'{tn}' has shape {:?} where the model its metadata describes needs \
                             {torch_shape:?}",
                            t.shape
                        ),
                    });
                }
                if let Some(x) = t.data.iter().find(|x| !x.is_finite()) {
                    return Err(Error::Checkpoint {
                        path: file.into(),
                        msg: format!("'{tn}' holds a non-finite value ({x})"),
                    });
                }
                got.insert(k.clone(), if linear { transpose(t) } else { t.clone() });
            }
            let extra: Vec<&String> = torch
                .keys()
                .filter(|tn| !tn.starts_with("parity."))
                .filter(|tn| !want.keys().any(|k| torch_name(k) == **tn))
                .collect();
            if !extra.is_empty() {
                return Err(Error::Checkpoint {
                    path: file.into(),
                    msg: format!(
                        "tensors the model does not have: {}",
                        extra
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            Ok(got)
        }
    }
    let got = cfg.model.visit(Check(&tensors, file, &mf.spec))?;
    // Build the run beside its place, then rename it there.
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "run".into());
    let staging = target.with_file_name(format!(".{name}.import-{}", std::process::id()));
    if staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    let stage = RunDir::new(&staging);
    let built = (|| -> Result<usize> {
        std::fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
        stage.claim()?;
        write_atomic(&stage.file("config.json"), config.as_bytes())?;
        write_atomic(&stage.file("model.json"), model.as_bytes())?;
        struct Save<'a>(
            &'a RunDir,
            &'a NamedParams,
            &'a serde_json::Value,
            u64,
            &'a RunConfig,
        );
        impl ModelVisitor for Save<'_> {
            type Output = Result<usize>;
            fn visit<M: Model>(self, section: &M::Config) -> Self::Output {
                let (dir, got, spec, step, cfg) = (self.0, self.1, self.2, self.3, self.4);
                let spec: M::Spec = serde_json::from_value(spec.clone())
                    .map_err(|e| Error::Config(format!("model spec: {e}")))?;
                let m = M::build(section, &spec, &burn::tensor::Device::flex())?;
                let m = params::assign(m, got)?;
                let p = params::collect(&m)?;
                let opt = crate::optim::AdamW::new(&p);
                let state = TrainState {
                    step,
                    rng: crate::rng::derived(0, crate::rng::streams::TRAIN_NOISE),
                    order: crate::data::BatchOrder::new(0),
                    elapsed_secs: 0.0,
                    examples_seen: 0,
                    config: Some(cfg.clone()),
                    model_state: None,
                    ranks: 1,
                };
                dir.save_checkpoint(&p, &opt, &p, &state, 1)?;
                Ok(got.len())
            }
        }
        let n = cfg.model.visit(Save(&stage, &got, &mf.spec, step, &cfg))?;
        std::fs::rename(&staging, &target).map_err(|e| Error::io(&target, e))?;
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        crate::fsio::sync_dir(parent)?;
        Ok(n)
    })();
    if built.is_err() && staging.exists() {
        // Only the folder this import made, never `out`.
        let _ = std::fs::remove_dir_all(&staging);
    }
    built
}

/// The PyTorch names and shapes of the model a run's config builds, as `(name, shape)` pairs.
pub fn torch_names_and_shapes(cfg: &RunConfig, dir: &RunDir) -> Result<Vec<(String, Vec<usize>)>> {
    let mf = dir.model_file()?;
    torch_names_for(cfg, &mf.spec)
}

/// The same from a configuration and a `model.json` spec (its `spec` object).
pub fn torch_names_for(
    cfg: &RunConfig,
    spec: &serde_json::Value,
) -> Result<Vec<(String, Vec<usize>)>> {
    struct Names<'a>(&'a serde_json::Value);
    impl ModelVisitor for Names<'_> {
        type Output = Result<Vec<(String, Vec<usize>)>>;
        fn visit<M: Model>(self, section: &M::Config) -> Self::Output {
            let spec: M::Spec = serde_json::from_value(self.0.clone())
                .map_err(|e| Error::Config(format!("model spec: {e}")))?;
            let m = M::build(section, &spec, &burn::tensor::Device::flex())?;
            Ok(params::shapes(&m)
                .into_iter()
                .map(|(k, shape)| {
                    let shape = if is_linear_weight(&k, &shape) {
                        vec![shape[1], shape[0]]
                    } else {
                        shape
                    };
                    (torch_name(&k), shape)
                })
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .collect())
        }
    }
    cfg.model.visit(Names(spec))
}

/// A parity block for the Python twins (`bench/parity.py`): `n` test examples of the run, the
/// noise of one ELBO draw, and the per-example terms the model's own code computes from exactly
/// that noise ([`Model::parity`]), as tensors named `parity.*` (ignored by `elbo import` and
/// `elbo_torch.load`).
pub fn parity(dir: &RunDir, n: usize, seed: u64) -> Result<NamedParams> {
    dir.check()?;
    let cfg = dir.config()?;
    struct Block<'a>(&'a RunDir, usize, u64);
    impl ModelVisitor for Block<'_> {
        type Output = Result<NamedParams>;
        fn visit<M: Model>(self, section: &M::Config) -> Self::Output {
            let (dir, n, seed) = (self.0, self.1, self.2);
            let dev = burn::tensor::Device::flex();
            let l = crate::run::load_model::<M>(dir, section, &dev)?;
            let ds = crate::data::load(&l.cfg.data, crate::data::Split::Test)?.head(n.max(1));
            let (b, d) = (ds.n, ds.dim());
            let rows = l
                .file
                .data
                .eval_rows(&ds, M::binarize(section, &l.spec), seed);
            let x = rows_of(rows, b, d, &dev);
            let classes = l.model.diffusion().map_or(0, |m| m.classes());
            let labels = ds.labels.clone().filter(|_| classes > 0);
            let mut rng = crate::rng::seeded(seed);
            let block = l
                .model
                .parity(x.clone(), labels.as_deref(), &mut rng)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "--parity: a {} run has no PyTorch twin to check against",
                        l.cfg.model.kind()
                    ))
                })??;
            let mut out = NamedParams::new();
            put(&mut out, "x", x)?;
            if let Some(y) = labels {
                put(
                    &mut out,
                    "labels",
                    rows_of(y.iter().map(|&v| v as f32).collect(), b, 1, &dev),
                )?;
            }
            for (name, t) in block {
                put(&mut out, &name, t)?;
            }
            Ok(out)
        }
    }
    cfg.model.visit(Block(dir, n, seed))
}

/// Store a `[r, c]` tensor as `parity.<name>`.
fn put(out: &mut NamedParams, name: &str, t: burn::tensor::Tensor<2>) -> Result<()> {
    let [r, c] = t.dims();
    out.insert(
        format!("parity.{name}"),
        ParamValue {
            shape: vec![r, c],
            data: crate::elbo::to_f32(t)?,
        },
    );
    Ok(())
}

/// Values as `[b, c]` rows on `dev`.
fn rows_of(v: Vec<f32>, b: usize, c: usize, dev: &burn::tensor::Device) -> burn::tensor::Tensor<2> {
    burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(v, [b, c]), dev)
}
