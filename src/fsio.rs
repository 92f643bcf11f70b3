//! File I/O at the bottom of the house: every file written atomically (a temporary file in the
//! same directory, flushed to disk, renamed over the old one, and the directory flushed), so a
//! crash or a power loss mid-write leaves the previous version intact; safetensors for tensors;
//! and the checks of a path a user names for output.
//!
//! For tests of exactly that, `ELBO_CRASH_AT=N` (read here only) kills the process with SIGKILL
//! at the N-th durable step (a file written, a rename, a link, a removal) of checkpoint writing,
//! counted from the start of the process: the crash-injection tests walk N over every point.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static DURABLE_STEPS: AtomicU64 = AtomicU64::new(0);

/// One durable step of checkpoint writing is done: the crash-injection hook (see the module).
pub fn crash_point() {
    let n = DURABLE_STEPS.fetch_add(1, Ordering::SeqCst) + 1;
    if let Ok(v) = std::env::var("ELBO_CRASH_AT") {
        if v.trim().parse::<u64>().ok() == Some(n) {
            // SAFETY: signalling our own process; SIGKILL cannot be caught, as with `kill -9`.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

/// Flush a directory's entries (a rename or a new file in it) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let d = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
        d.sync_all().map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// Write `bytes` to `path` and flush it to disk (not atomic: for files inside a folder that is
/// itself renamed into place).
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))?;
    crash_point();
    Ok(())
}

use safetensors::tensor::{Dtype, TensorView};

use crate::params::{NamedParams, ParamValue};
use crate::{Error, Result};

/// Check a path a user named for a file elbo will write (atomically, by a rename over it): its
/// folder must exist, and the path must be new or a regular file. A device, a FIFO, a folder or
/// a symbolic link there is refused, since the rename would replace it.
pub fn check_output_file(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("its directory {} does not exist", dir.display()),
            ),
        ));
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(m) => {
            let t = m.file_type();
            let what = if t.is_dir() {
                "a directory".to_string()
            } else if t.is_symlink() {
                "a symbolic link (name the file itself)".to_string()
            } else {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::FileTypeExt;
                    if t.is_fifo() {
                        "a FIFO".to_string()
                    } else if t.is_char_device() || t.is_block_device() {
                        "a device".to_string()
                    } else if t.is_socket() {
                        "a socket".to_string()
                    } else {
                        "not a regular file".to_string()
                    }
                }
                #[cfg(not(unix))]
                {
                    "not a regular file".to_string()
                }
            };
            Err(Error::Invalid(format!(
                "{}: is {what}; elbo writes its output only to a regular file or a new name",
                path.display()
            )))
        }
    }
}

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
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    crash_point();
    sync_dir(dir)
}

/// Groups of named parameters (each key prefixed by its group's prefix) with metadata, as the
/// bytes of a safetensors file.
pub fn tensor_bytes(
    path: &Path,
    groups: &[(&str, &NamedParams)],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
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
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Checkpoint {
        path: path.into(),
        msg: e.to_string(),
    })
}

/// Save groups of named parameters with metadata, atomically.
pub fn save_tensors(
    path: &Path,
    groups: &[(&str, &NamedParams)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    write_atomic(path, &tensor_bytes(path, groups, metadata)?)
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
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "tensor {name} holds a non-finite value ({} at index {i}); these weights cannot \
                 be used",
                data[i]
            )));
        }
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
        // Non-finite weights are refused with the tensor's name.
        let mut bad = a.clone();
        bad.get_mut("l.weight").unwrap().data[2] = f32::NAN;
        save_tensors(&p, &[("", &bad)], HashMap::new()).unwrap();
        let e = load_tensors(&p).unwrap_err().to_string();
        assert!(e.contains("l.weight") && e.contains("NaN"), "{e}");
        std::fs::write(&p, b"garbage").unwrap();
        assert!(load_tensors(&p)
            .unwrap_err()
            .to_string()
            .contains("not a valid safetensors"));
    }
}
