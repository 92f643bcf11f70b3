//! Checkpoint files: safetensors for tensors, JSON for the rest, each written atomically (a
//! temporary file in the same directory, flushed, then renamed over the old one), so a crash
//! mid-write leaves the previous checkpoint intact.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use super::params::{NamedParams, ParamValue};
use crate::{Error, Result};

/// Write `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Save groups of named parameters (each key prefixed by its group's prefix) with metadata.
pub fn save_tensors(
    path: &Path,
    groups: &[(&str, &NamedParams)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut bytes_store: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (prefix, params) in groups {
        for (k, v) in params.iter() {
            let mut b = Vec::with_capacity(v.data.len() * 4);
            for x in &v.data {
                b.extend_from_slice(&x.to_le_bytes());
            }
            bytes_store.push((format!("{prefix}{k}"), v.shape.clone(), b));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = bytes_store
        .iter()
        .map(|(k, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::Checkpoint {
                    path: path.into(),
                    msg: format!("{k}: {e}"),
                })
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Checkpoint {
        path: path.into(),
        msg: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// Load every f32 tensor of a safetensors file, and its metadata.
pub fn load_tensors(path: &Path) -> Result<(NamedParams, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| Error::Checkpoint {
        path: path.into(),
        msg,
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let mut out = NamedParams::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor {name} is {:?}, expected F32",
                view.dtype()
            )));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(
            name,
            ParamValue {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok((out, metadata))
}

/// The entries of `all` whose key starts with `prefix`, with the prefix removed.
pub fn take_prefix(all: &NamedParams, prefix: &str) -> NamedParams {
    all.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        let a: NamedParams = [(
            "l.weight".to_string(),
            ParamValue {
                shape: vec![2, 2],
                data: vec![1., 2., 3., -4.],
            },
        )]
        .into();
        let meta: HashMap<String, String> = [("step".to_string(), "7".to_string())].into();
        save_tensors(&p, &[("m/", &a), ("v/", &a)], meta).unwrap();
        let (all, md) = load_tensors(&p).unwrap();
        assert_eq!(md["step"], "7");
        assert_eq!(take_prefix(&all, "m/"), a);
        assert_eq!(all.len(), 2);
        assert!(!dir.path().join(".x.safetensors.tmp").exists());
        std::fs::write(&p, b"garbage").unwrap();
        assert!(load_tensors(&p)
            .unwrap_err()
            .to_string()
            .contains("not a valid safetensors"));
    }
}
