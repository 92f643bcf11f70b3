//! Data specs: where a data set comes from, parsed from the command line's SPEC.

use std::path::PathBuf;

use super::{folder, toy};
use crate::{Error, Result};

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
