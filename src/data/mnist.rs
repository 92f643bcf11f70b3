//! The MNIST-format sources: the embedded mnist10k digits, Fashion-MNIST's four IDX files, and
//! any pair of IDX files (`idx:IMAGES[,LABELS]`).

use std::path::{Path, PathBuf};

use super::{embedded, idx, DataKind, Dataset, Split};
use crate::{Error, Result};

/// The directory that holds Fashion-MNIST.
pub fn fashion_dir() -> PathBuf {
    std::env::var_os("ELBO_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"))
}

fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

fn images_from_idx(
    a: idx::IdxArray,
    path: &Path,
) -> Result<(usize, Vec<usize>, DataKind, Vec<f32>)> {
    let n = a.dims[0];
    if n == 0 {
        return Err(Error::format(path, "the file holds no examples"));
    }
    let rest: Vec<usize> = a.dims[1..].to_vec();
    let (shape, kind) = match (a.is_u8, rest.as_slice()) {
        (true, [h, w]) => (vec![1, *h, *w], DataKind::Image8),
        (true, [c, h, w]) => (vec![*c, *h, *w], DataKind::Image8),
        (_, []) => (vec![1], DataKind::Continuous),
        _ => (vec![rest.iter().product()], DataKind::Continuous),
    };
    Ok((n, shape, kind, a.values))
}

fn labels_from_idx(path: &Path, n: usize) -> Result<Vec<u32>> {
    let l = idx::read_idx(path)?;
    if l.dims.len() != 1 || l.dims[0] != n {
        return Err(Error::format(
            path,
            format!(
                "labels have shape {:?}, expected [{n}] to match the images",
                l.dims
            ),
        ));
    }
    l.values
        .iter()
        .map(|&v| {
            if v >= 0.0 && v.fract() == 0.0 {
                Ok(v as u32)
            } else {
                Err(Error::format(
                    path,
                    format!("label {v} is not a non-negative integer"),
                ))
            }
        })
        .collect()
}

pub(super) fn load_idx_pair(spec: &str, images: &Path, labels: Option<&Path>) -> Result<Dataset> {
    let a = idx::read_idx(images)?;
    let (n, shape, kind, x) = images_from_idx(a, images)?;
    let labels = labels.map(|l| labels_from_idx(l, n)).transpose()?;
    Ok(Dataset {
        spec: spec.to_string(),
        split: Split::All,
        n,
        shape,
        kind,
        x,
        labels,
        mixture: None,
    })
}

pub(super) fn concat(mut a: Dataset, b: Dataset) -> Dataset {
    a.x.extend(b.x);
    a.n += b.n;
    a.labels = match (a.labels, b.labels) {
        (Some(mut x), Some(y)) => {
            x.extend(y);
            Some(x)
        }
        _ => None,
    };
    a
}

/// The embedded mnist10k: the first 9,000 digits are the training split, the last 1,000 the
/// test split.
pub(super) fn load_mnist10k(spec: &str, split: Split) -> Result<Dataset> {
    let p = Path::new("<embedded mnist10k>");
    let (n, shape, kind, x) = images_from_idx(idx::parse_idx_file(embedded::IMAGES, p)?, p)?;
    let l = idx::parse_idx_file(embedded::LABELS, p)?;
    let all = Dataset {
        spec: spec.to_string(),
        split: Split::All,
        n,
        shape,
        kind,
        x,
        labels: Some(l.values.iter().map(|&v| v as u32).collect()),
        mixture: None,
    };
    let t = embedded::TRAIN_COUNT.min(n);
    Ok(match split {
        Split::Train => all.rows(0, t),
        Split::Test => all.rows(t, n),
        Split::All => all,
    })
}

/// Fashion-MNIST from [`fashion_dir`]: its train and t10k files.
pub(super) fn load_fashion(spec: &str, split: Split) -> Result<Dataset> {
    let dir = fashion_dir();
    let get = |stem: &str| {
        find_file(&dir, stem).ok_or_else(|| Error::DataSpec {
            spec: spec.to_string(),
            msg: format!(
                "{} not found in {}. Install Fashion-MNIST with `apt-get install dataset-fashion-mnist` \
                 (it lands in /usr/share/datasets/fashion-mnist), or set ELBO_DATA_DIR to a folder \
                 holding the four IDX files",
                stem,
                dir.display()
            ),
        })
    };
    let part = |prefix: &str| -> Result<Dataset> {
        let i = get(&format!("{prefix}-images-idx3-ubyte"))?;
        let l = get(&format!("{prefix}-labels-idx1-ubyte"))?;
        load_idx_pair(spec, &i, Some(&l))
    };
    Ok(match split {
        Split::Train => part("train")?,
        Split::Test => part("t10k")?,
        Split::All => concat(part("train")?, part("t10k")?),
    })
}
