//! Images people already have: a folder of PNG/JPEG files (`folder:PATH`, as torchvision's
//! ImageFolder: one subfolder per class, named as the class; or the images directly in PATH,
//! unlabelled), and CIFAR-10's binary batches (`cifar10:DIR`).
//!
//! Folder images are grayscale (one channel) when every file is, else RGB (three). They must
//! share one size, unless `?size=N` (`--set data.size=N`) resizes each so its shorter side is N
//! and crops the centre N×N, as torchvision's `Resize(N)` + `CenterCrop(N)` do. Every tenth image
//! of each class (in file-name order) is the test split. Files are checked before they are
//! decoded: a header that claims more than [`MAX_PIXELS`] pixels, a file that is not an image,
//! and a truncated or corrupt one are errors that name the file.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView, ImageReader};

use super::{DataKind, Dataset, Split};
use crate::{Error, Result};

/// The most pixels one image may claim (a larger header is refused before decoding).
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;
/// The most values a folder may load in all (4 GiB of f32).
pub const MAX_VALUES: u64 = 1 << 30;

const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// A `folder:` spec: the path and the size to resize to, if any (`folder:PATH?size=N`).
pub fn parse_folder(arg: &str) -> Result<(PathBuf, Option<u32>)> {
    match arg.rsplit_once("?size=") {
        Some((p, n)) => {
            let n: u32 = n
                .parse()
                .ok()
                .filter(|&n| n > 0 && n <= 4096)
                .ok_or_else(|| Error::DataSpec {
                    spec: format!("folder:{arg}"),
                    msg: format!("size '{n}' is not a whole number of pixels from 1 to 4096"),
                })?;
            Ok((PathBuf::from(p), Some(n)))
        }
        None => Ok((PathBuf::from(arg), None)),
    }
}

/// The image files of `dir` (sorted), refusing files that are not images.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || p.is_dir() {
            continue;
        }
        let ext = p
            .extension()
            .map(|x| x.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if !EXTENSIONS.contains(&ext.as_str()) {
            return Err(Error::format(
                &p,
                "not a PNG or JPEG image (a folder of images holds .png, .jpg or .jpeg files, \
                 in one subfolder per class)",
            ));
        }
        files.push(p);
    }
    files.sort();
    Ok(files)
}

/// Decode one file, checking its header's size first.
fn open(path: &Path) -> Result<DynamicImage> {
    let reader = ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        return Err(Error::format(
            path,
            "not a PNG or JPEG image (unrecognised contents)",
        ));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| Error::format(path, format!("unreadable image header: {e}")))?;
    if (w as u64) * (h as u64) > MAX_PIXELS || w == 0 || h == 0 {
        return Err(Error::format(
            path,
            format!("the header claims {w}×{h} pixels (at most {MAX_PIXELS} are read)"),
        ));
    }
    ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| Error::format(path, format!("corrupt or truncated image: {e}")))
}

/// Resize so the shorter side is `n`, then crop the centre n×n.
fn resize_crop(img: DynamicImage, n: u32) -> DynamicImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = if w <= h {
        (
            n,
            ((h as u64 * n as u64) as f64 / w as f64)
                .round()
                .max(n as f64) as u32,
        )
    } else {
        (
            ((w as u64 * n as u64) as f64 / h as f64)
                .round()
                .max(n as f64) as u32,
            n,
        )
    };
    let r = img.resize_exact(nw, nh, FilterType::Triangle);
    r.crop_imm((nw - n) / 2, (nh - n) / 2, n, n)
}

/// Load `folder:PATH[?size=N]`.
pub fn load_folder(spec: &str, dir: &Path, size: Option<u32>, split: Split) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::DataSpec {
            spec: spec.to_string(),
            msg: format!("{} is not a directory", dir.display()),
        });
    }
    let mut classes: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    classes.sort();
    // (file, label): one subfolder per class, or the images directly in the folder.
    let files: Vec<(PathBuf, Option<u32>)> = if classes.is_empty() {
        image_files(dir)?.into_iter().map(|f| (f, None)).collect()
    } else {
        let mut v = Vec::new();
        for (k, c) in classes.iter().enumerate() {
            let fs = image_files(c)?;
            if fs.is_empty() {
                return Err(Error::format(c, "a class folder with no images"));
            }
            v.extend(fs.into_iter().map(|f| (f, Some(k as u32))));
        }
        v
    };
    if files.is_empty() {
        return Err(Error::DataSpec {
            spec: spec.to_string(),
            msg: format!("{} holds no .png, .jpg or .jpeg images", dir.display()),
        });
    }
    // Every tenth of each class is the test split.
    let mut seen = std::collections::HashMap::new();
    let files: Vec<(PathBuf, Option<u32>)> = files
        .into_iter()
        .filter(|(_, y)| {
            let i = seen.entry(*y).or_insert(0usize);
            *i += 1;
            let test = *i % 10 == 0;
            match split {
                Split::Train => !test,
                Split::Test => test,
                Split::All => true,
            }
        })
        .collect();
    if files.is_empty() {
        return Err(Error::DataSpec {
            spec: spec.to_string(),
            msg: format!(
                "the {split} split is empty (every tenth image of a class is a test image: a \
                 class needs 10 for one)"
            ),
        });
    }
    let mut images = Vec::with_capacity(files.len());
    let mut gray = true;
    for (f, _) in &files {
        let img = open(f)?;
        let img = match size {
            Some(n) => resize_crop(img, n),
            None => img,
        };
        gray &= !img.color().has_color();
        images.push(img);
    }
    let (w, h) = images[0].dimensions();
    if let Some((i, _)) = images
        .iter()
        .enumerate()
        .find(|(_, im)| im.dimensions() != (w, h))
    {
        return Err(Error::format(
            &files[i].0,
            format!(
                "is {}×{} where the first image, {}, is {w}×{h}; give a common size with \
                 --set data.size=N (resize and centre-crop to N×N)",
                images[i].width(),
                images[i].height(),
                files[0].0.display()
            ),
        ));
    }
    let c: usize = if gray { 1 } else { 3 };
    let (hh, ww) = (h as usize, w as usize);
    let total = files.len() as u64 * (c * hh * ww) as u64;
    if total > MAX_VALUES {
        return Err(Error::DataSpec {
            spec: spec.to_string(),
            msg: format!("{total} values would not fit in memory (at most {MAX_VALUES})"),
        });
    }
    let mut x = Vec::with_capacity(total as usize);
    for img in &images {
        if gray {
            x.extend(img.to_luma8().as_raw().iter().map(|&v| v as f32));
        } else {
            // HWC → CHW.
            let rgb = img.to_rgb8();
            let raw = rgb.as_raw();
            for ch in 0..3 {
                x.extend((0..hh * ww).map(|p| raw[p * 3 + ch] as f32));
            }
        }
    }
    let labels = (!classes.is_empty()).then(|| files.iter().map(|(_, y)| y.unwrap_or(0)).collect());
    Ok(Dataset {
        spec: spec.to_string(),
        split,
        n: files.len(),
        shape: vec![c, hh, ww],
        kind: DataKind::Image8,
        x,
        labels,
        mixture: None,
    })
}

/// CIFAR-10's binary format: records of one label byte and 3,072 pixel bytes (1,024 red, then
/// green, then blue, row-major 32×32).
const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

fn cifar_file(path: &Path) -> Result<(Vec<f32>, Vec<u32>)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let len = meta.len();
    if len == 0 || len % CIFAR_RECORD as u64 != 0 {
        return Err(Error::format(
            path,
            format!(
                "{len} bytes is not a whole number of CIFAR-10 records ({CIFAR_RECORD} bytes \
                 each: a label byte and 3×32×32 pixels); truncated or not CIFAR-10"
            ),
        ));
    }
    if len > 512 * 1024 * 1024 {
        return Err(Error::format(
            path,
            format!("{len} bytes is too large for a CIFAR-10 batch"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let n = bytes.len() / CIFAR_RECORD;
    let mut x = Vec::with_capacity(n * (CIFAR_RECORD - 1));
    let mut y = Vec::with_capacity(n);
    for (i, r) in bytes.chunks_exact(CIFAR_RECORD).enumerate() {
        if r[0] > 9 {
            return Err(Error::format(
                path,
                format!("record {i} has label {} (CIFAR-10 labels are 0–9)", r[0]),
            ));
        }
        y.push(r[0] as u32);
        x.extend(r[1..].iter().map(|&v| v as f32));
    }
    Ok((x, y))
}

/// Load `cifar10:DIR`: data_batch_1.bin … data_batch_5.bin (train) and test_batch.bin (test),
/// as in the archive's `cifar-10-batches-bin` folder.
pub fn load_cifar10(spec: &str, dir: &Path, split: Split) -> Result<Dataset> {
    let names: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
        Split::All => (1..=5)
            .map(|i| format!("data_batch_{i}.bin"))
            .chain(["test_batch.bin".to_string()])
            .collect(),
    };
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for name in &names {
        let p = dir.join(name);
        if !p.is_file() {
            return Err(Error::DataSpec {
                spec: spec.to_string(),
                msg: format!(
                    "{} not found (cifar10:DIR reads the binary version's data_batch_1.bin … \
                     data_batch_5.bin and test_batch.bin)",
                    p.display()
                ),
            });
        }
        let (a, b) = cifar_file(&p)?;
        x.extend(a);
        y.extend(b);
    }
    Ok(Dataset {
        spec: spec.to_string(),
        split,
        n: y.len(),
        shape: vec![3, 32, 32],
        kind: DataKind::Image8,
        x,
        labels: Some(y),
        mixture: None,
    })
}
