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
pub mod dataset;
pub mod embedded;
pub mod folder;
pub mod idx;
pub mod mnist;
pub mod npy;
pub mod space;
pub mod spec;
pub mod toy;

pub use batches::{BatchOrder, Binarize};
pub use dataset::{DataKind, Dataset, Scaling, Split};
pub use mnist::fashion_dir;
pub use space::DataSpace;
pub use spec::{DataSpec, SPEC_HELP};
pub use toy::Mixture;

use crate::Result;

/// Load `split` of the data set `spec`: a short dispatch to the source's own loader.
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
    let mut d = match spec.parse::<DataSpec>()? {
        DataSpec::Mnist10k => mnist::load_mnist10k(spec, split)?,
        DataSpec::FashionMnist => mnist::load_fashion(spec, split)?,
        DataSpec::Idx { images, labels } => {
            mnist::load_idx_pair(spec, &images, labels.as_deref())?.split_last_tenth(split)?
        }
        DataSpec::Npy(path) => npy::load_npy(spec, &path)?.split_last_tenth(split)?,
        DataSpec::Csv(path) => csv::load_csv(spec, &path)?.split_last_tenth(split)?,
        DataSpec::Folder { dir, size } => folder::load_folder(spec, &dir, size, split)?,
        DataSpec::Cifar10(dir) => folder::load_cifar10(spec, &dir, split)?,
        DataSpec::Toy(name) => toy::load_toy(spec, &name, split)?,
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
