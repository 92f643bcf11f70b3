//! Data sets: where they come from (a [`DataSpec`]), which part (a [`Split`]), and what they hold
//! (a [`Dataset`]: examples as rows of f32, their shape, whether they are 8-bit images).
//!
//! | spec | source | splits |
//! | --- | --- | --- |
//! | `mnist10k` | embedded in the binary | first 9,000 train, last 1,000 test |
//! | `fashion-mnist` | `$ELBO_DATA_DIR` or `/usr/share/datasets/fashion-mnist` | train / t10k files |
//! | `idx:IMAGES[,LABELS]` | IDX file (raw or .gz) | last 10% of rows is test |
//! | `npy:FILE` | 2-D float32/float64 `.npy` | last 10% of rows is test |
//! | `csv:FILE` | numeric CSV | last 10% of rows is test |
//! | `toy:NAME` | 2-D Gaussian mixture with exact density | fixed draws of 20,000 / 5,000 |

pub mod batches;
pub mod csv;
pub mod embedded;
pub mod folder;
pub mod idx;
pub mod npy;
pub mod space;
pub mod toy;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use batches::{BatchOrder, Binarize};
pub use space::DataSpace;
pub use toy::Mixture;

use crate::{Error, Result};

/// How a model maps continuous data into its own space, x̃ = (x − shift)/scale; the
/// log-Jacobian Σ log scale is part of every likelihood it reports, so the numbers stay in the
/// units of the data as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Scaling {
    /// Per dimension: zero mean and unit variance on the training split.
    #[default]
    Standardize,
    /// One map for all dimensions: the training split's [min, max] onto [−1, 1].
    MinusOneOne,
}

/// Which part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    #[default]
    Train,
    Test,
    All,
}

crate::choice!(Split {
    Train = "train": "the training split",
    Test = "test": "the held-out test split",
    All = "all": "both",
});

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::All => "all",
        })
    }
}

/// Where a data set comes from, parsed from the command line's SPEC.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSpec {
    Mnist10k,
    FashionMnist,
    Idx {
        images: PathBuf,
        labels: Option<PathBuf>,
    },
    Npy(PathBuf),
    Csv(PathBuf),
    Toy(String),
    /// A folder of PNG/JPEG images (one subfolder per class), resized to N×N if given.
    Folder {
        dir: PathBuf,
        size: Option<u32>,
    },
    /// CIFAR-10's binary batches in a folder.
    Cifar10(PathBuf),
}

/// The data specs, for help texts.
pub const SPEC_HELP: &str = "mnist10k (embedded, default) | fashion-mnist | idx:IMAGES[,LABELS] | npy:FILE | csv:FILE | toy:ring8|grid9|blobs2|gaussian | folder:DIR (PNG/JPEG, a subfolder per class; --set data.size=N to resize) | cifar10:DIR (the binary batches)";

impl std::str::FromStr for DataSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |msg: &str| Error::DataSpec {
            spec: s.to_string(),
            msg: msg.to_string(),
        };
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let need = |a: Option<&str>| -> Result<PathBuf> {
            match a {
                Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
                _ => Err(bad("a file path is needed after the colon")),
            }
        };
        Ok(match kind {
            "mnist10k" | "mnist" if arg.is_none() => DataSpec::Mnist10k,
            "fashion-mnist" | "fashion_mnist" if arg.is_none() => DataSpec::FashionMnist,
            "idx" => {
                let a = need(arg)?;
                let a = a.to_string_lossy().to_string();
                match a.split_once(',') {
                    Some((i, l)) => DataSpec::Idx {
                        images: PathBuf::from(i),
                        labels: Some(PathBuf::from(l)),
                    },
                    None => DataSpec::Idx {
                        images: PathBuf::from(a),
                        labels: None,
                    },
                }
            }
            "npy" => DataSpec::Npy(need(arg)?),
            "folder" => {
                need(arg)?;
                let (dir, size) = folder::parse_folder(arg.unwrap_or_default())?;
                DataSpec::Folder { dir, size }
            }
            "cifar10" | "cifar-10" => DataSpec::Cifar10(need(arg)?),
            "csv" => DataSpec::Csv(need(arg)?),
            "toy" => match arg {
                Some(n) if !n.is_empty() => DataSpec::Toy(n.to_string()),
                _ => {
                    let names: Vec<&str> = toy::TOY_SETS.iter().map(|(n, _)| *n).collect();
                    return Err(bad(&format!(
                        "a toy set's name is needed after the colon: {}",
                        names.join(", ")
                    )));
                }
            },
            _ => return Err(bad(&format!("unknown kind of data; use {SPEC_HELP}"))),
        })
    }
}

/// What the values of a data set are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    /// Integers 0..=255 (8-bit images): likelihoods are discrete, reported in bits/dim.
    Image8,
    /// Real vectors: likelihoods are densities, reported in nats and nats/dim.
    Continuous,
}

/// A data set in memory: `n` examples, each `shape` (e.g. `[1, 28, 28]` or `[2]`), as rows of a
/// row-major `[n, dim]` array.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub spec: String,
    pub split: Split,
    pub n: usize,
    pub shape: Vec<usize>,
    pub kind: DataKind,
    pub x: Vec<f32>,
    pub labels: Option<Vec<u32>>,
    /// The exact density, where known (toy sets).
    pub mixture: Option<Mixture>,
}

impl Dataset {
    /// Values per example, D.
    pub fn dim(&self) -> usize {
        self.shape.iter().product()
    }

    /// `[height, width]` for image data.
    pub fn image_hw(&self) -> Option<(usize, usize)> {
        match (self.kind, self.shape.as_slice()) {
            (DataKind::Image8, [1, h, w]) => Some((*h, *w)),
            _ => None,
        }
    }

    /// The first `n` examples (or all, if fewer).
    pub fn head(&self, n: usize) -> Dataset {
        let n = n.min(self.n);
        let mut d = self.clone();
        d.n = n;
        d.x.truncate(n * self.dim());
        if let Some(l) = &mut d.labels {
            l.truncate(n);
        }
        d
    }

    fn rows(mut self, start: usize, end: usize) -> Dataset {
        let dim = self.dim();
        self.x = self.x[start * dim..end * dim].to_vec();
        self.labels = self.labels.map(|l| l[start..end].to_vec());
        self.n = end - start;
        self
    }

    /// Apply the "last 10% of rows is test" rule of single-file sources.
    fn split_last_tenth(self, split: Split) -> Result<Dataset> {
        let n = self.n;
        let n_test = ((n + 5) / 10).max(1);
        if n < 2 {
            return Err(Error::DataSpec {
                spec: self.spec.clone(),
                msg: format!("{n} example(s) is too few to split into train and test"),
            });
        }
        let mut d = match split {
            Split::Train => self.rows(0, n - n_test),
            Split::Test => self.rows(n - n_test, n),
            Split::All => self,
        };
        d.split = split;
        Ok(d)
    }

    /// The affine map of `scaling`, as per-dimension (shift, scale); a constant column (or a
    /// constant data set) keeps scale 1 rather than dividing by zero.
    pub fn affine(&self, scaling: Scaling) -> (Vec<f32>, Vec<f32>) {
        let d = self.dim();
        let safe = |s: f64| if s > 1e-8 { s as f32 } else { 1.0 };
        match scaling {
            Scaling::Standardize => {
                let (mean, std) = self.moments();
                (
                    mean.iter().map(|&m| m as f32).collect(),
                    std.into_iter().map(safe).collect(),
                )
            }
            Scaling::MinusOneOne => {
                let (lo, hi) = self
                    .x
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                        (lo.min(v as f64), hi.max(v as f64))
                    });
                if !(lo.is_finite() && hi.is_finite()) {
                    return (vec![0.0; d], vec![1.0; d]);
                }
                (
                    vec![(0.5 * (lo + hi)) as f32; d],
                    vec![safe(0.5 * (hi - lo)); d],
                )
            }
        }
    }

    /// Per-dimension mean and standard deviation (f64), for standardising continuous data.
    pub fn moments(&self) -> (Vec<f64>, Vec<f64>) {
        let d = self.dim();
        let mut mean = vec![0.0; d];
        let mut sq = vec![0.0; d];
        for row in self.x.chunks_exact(d) {
            for j in 0..d {
                mean[j] += row[j] as f64;
                sq[j] += (row[j] as f64) * (row[j] as f64);
            }
        }
        let n = self.n.max(1) as f64;
        let std = (0..d)
            .map(|j| {
                let m = mean[j] / n;
                (sq[j] / n - m * m).max(0.0).sqrt()
            })
            .collect();
        (mean.iter().map(|m| m / n).collect(), std)
    }
}

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

fn load_idx_pair(spec: &str, images: &Path, labels: Option<&Path>) -> Result<Dataset> {
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

fn concat(mut a: Dataset, b: Dataset) -> Dataset {
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

/// Load `split` of the data set `spec`.
///
/// ```
/// use elbo::data::{load, DataKind, Split};
///
/// let test = load("mnist10k", Split::Test)?; // embedded in the binary
/// assert_eq!((test.n, test.shape.clone(), test.kind), (1000, vec![1, 28, 28], DataKind::Image8));
/// assert_eq!(test.labels.as_ref().map(|l| l.len()), Some(1000));
/// // A bad spec is an error that says what would work.
/// assert!(load("toy:spiral", Split::Train).unwrap_err().to_string().contains("ring8"));
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn load(spec: &str, split: Split) -> Result<Dataset> {
    let parsed: DataSpec = spec.parse()?;
    let mut d = match parsed {
        DataSpec::Mnist10k => {
            let p = Path::new("<embedded mnist10k>");
            let (n, shape, kind, x) =
                images_from_idx(idx::parse_idx_file(embedded::IMAGES, p)?, p)?;
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
            match split {
                Split::Train => all.rows(0, t),
                Split::Test => all.rows(t, n),
                Split::All => all,
            }
        }
        DataSpec::FashionMnist => {
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
            match split {
                Split::Train => part("train")?,
                Split::Test => part("t10k")?,
                Split::All => concat(part("train")?, part("t10k")?),
            }
        }
        DataSpec::Idx { images, labels } => {
            load_idx_pair(spec, &images, labels.as_deref())?.split_last_tenth(split)?
        }
        DataSpec::Npy(path) => {
            let a = npy::read_npy(&path)?;
            Dataset {
                spec: spec.to_string(),
                split: Split::All,
                n: a.rows,
                shape: vec![a.cols],
                kind: DataKind::Continuous,
                x: a.values,
                labels: None,
                mixture: None,
            }
            .split_last_tenth(split)?
        }
        DataSpec::Csv(path) => {
            let t = csv::read_csv(&path)?;
            Dataset {
                spec: spec.to_string(),
                split: Split::All,
                n: t.rows,
                shape: vec![t.cols],
                kind: DataKind::Continuous,
                x: t.values,
                labels: None,
                mixture: None,
            }
            .split_last_tenth(split)?
        }
        DataSpec::Folder { dir, size } => folder::load_folder(spec, &dir, size, split)?,
        DataSpec::Cifar10(dir) => folder::load_cifar10(spec, &dir, split)?,
        DataSpec::Toy(name) => {
            let m = Mixture::named(&name)?;
            let (x, y) = match split {
                Split::Train => m.split_data(false),
                Split::Test => m.split_data(true),
                Split::All => {
                    let (mut a, mut la) = m.split_data(false);
                    let (b, lb) = m.split_data(true);
                    a.extend(b);
                    la.extend(lb);
                    (a, la)
                }
            };
            Dataset {
                spec: spec.to_string(),
                split,
                n: x.len() / m.dim(),
                shape: vec![m.dim()],
                kind: DataKind::Continuous,
                x,
                // The mixture component each point came from.
                labels: Some(y),
                mixture: Some(m),
            }
        }
    };
    d.split = split;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnist10k_splits() {
        let tr = load("mnist10k", Split::Train).unwrap();
        let te = load("mnist10k", Split::Test).unwrap();
        assert_eq!((tr.n, te.n), (9000, 1000));
        assert_eq!(tr.shape, vec![1, 28, 28]);
        assert_eq!(tr.kind, DataKind::Image8);
        let max = tr.x.iter().cloned().fold(0.0f32, f32::max);
        assert_eq!(max, 255.0);
        assert_eq!(te.labels.as_ref().unwrap().len(), 1000);
    }

    #[test]
    fn affine_maps() {
        let ds = Dataset {
            spec: "test".into(),
            split: Split::All,
            n: 3,
            shape: vec![2],
            kind: DataKind::Continuous,
            x: vec![0.0, 3.0, 4.0, 3.0, 10.0, 3.0],
            labels: None,
            mixture: None,
        };
        // [−1, 1]: one map for both columns, from the range [0, 10].
        let (shift, scale) = ds.affine(Scaling::MinusOneOne);
        assert_eq!((shift, scale), (vec![5.0; 2], vec![5.0; 2]));
        // Standardise: column 0 has mean 14/3 and variance 152/9; the constant column keeps 1.
        let (shift, scale) = ds.affine(Scaling::Standardize);
        assert!((shift[0] - 14.0 / 3.0).abs() < 1e-5 && shift[1] == 3.0);
        assert!((scale[0] - (152.0f32 / 9.0).sqrt()).abs() < 1e-5 && scale[1] == 1.0);
    }

    #[test]
    fn spec_parsing() {
        assert_eq!("mnist10k".parse::<DataSpec>().unwrap(), DataSpec::Mnist10k);
        assert_eq!(
            "idx:a.gz,b.gz".parse::<DataSpec>().unwrap(),
            DataSpec::Idx {
                images: "a.gz".into(),
                labels: Some("b.gz".into())
            }
        );
        assert!("npy:".parse::<DataSpec>().is_err());
        assert!("parquet:x"
            .parse::<DataSpec>()
            .unwrap_err()
            .to_string()
            .contains("unknown kind"));
    }

    #[test]
    fn missing_fashion_says_how_to_install() {
        std::env::set_var("ELBO_DATA_DIR", "/nonexistent-elbo-dir");
        let e = load("fashion-mnist", Split::Train).unwrap_err().to_string();
        std::env::remove_var("ELBO_DATA_DIR");
        assert!(e.contains("apt-get install dataset-fashion-mnist"), "{e}");
    }

    #[test]
    fn toy_splits_differ_and_have_density() {
        let tr = load("toy:ring8", Split::Train).unwrap();
        let te = load("toy:ring8", Split::Test).unwrap();
        assert_eq!((tr.n, te.n), (toy::TOY_TRAIN, toy::TOY_TEST));
        assert_ne!(tr.x[..2], te.x[..2]);
        assert!(tr.mixture.is_some());
    }
}
