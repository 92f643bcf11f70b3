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

use crate::raster::{self, Header, Raster};

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

/// What a directory entry is, following symlinks: a folder, a regular file, or something else
/// (a FIFO, a socket, a device), which is never opened: reading a FIFO blocks until a writer
/// comes.
enum Entry {
    Dir,
    File,
    Other(&'static str),
}

fn entry_kind(p: &Path) -> Result<Entry> {
    let m = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
    let t = m.file_type();
    if t.is_dir() {
        return Ok(Entry::Dir);
    }
    if t.is_file() {
        return Ok(Entry::File);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Ok(Entry::Other("a FIFO (named pipe)"));
        }
        if t.is_socket() {
            return Ok(Entry::Other("a socket"));
        }
        if t.is_char_device() || t.is_block_device() {
            return Ok(Entry::Other("a device"));
        }
    }
    Ok(Entry::Other("not a regular file"))
}

/// The image files of `dir` (sorted), refusing entries that are not regular image files.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        match entry_kind(&p)? {
            Entry::Dir => continue,
            Entry::Other(what) => {
                return Err(Error::format(
                    &p,
                    format!(
                        "is {what}, not a regular file; a folder of images holds only image files"
                    ),
                ))
            }
            Entry::File => {}
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

/// Read one file's header and check its size.
fn header(path: &Path) -> Result<Header> {
    let hd = raster::header(path)?;
    let (w, h) = (hd.width, hd.height);
    if (w as u64) * (h as u64) > MAX_PIXELS || w == 0 || h == 0 {
        return Err(Error::format(
            path,
            format!("the header claims {w}×{h} pixels (at most {MAX_PIXELS} are read)"),
        ));
    }
    Ok(hd)
}

/// The centre square of the image (side: its shorter side), resized to n×n: torchvision's
/// `Resize(n)` + `CenterCrop(n)`, cropped first, so that no intermediate image is larger than
/// the source or the n×n result (a 1×16384 strip resized to 4096 first would be 67 M pixels
/// wide). The resize is the antialiased triangle filter ([`Raster::resize`]).
fn resize_crop(img: Raster, n: u32) -> Raster {
    let (w, h) = (img.width, img.height);
    let s = w.min(h);
    let square = if s == w && s == h {
        img
    } else {
        img.crop((w - s) / 2, (h - s) / 2, s, s)
    };
    square.resize(n, n)
}

/// Load `folder:PATH[?size=N]`. Every file's header is read (and its size checked) before any
/// is decoded; images are then decoded one at a time straight into the data set.
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
        // Beside class folders, other top-level files (a README, a licence) are left alone,
        // but images there would silently have no class.
        let mut top: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                !p.is_dir()
                    && p.extension().is_some_and(|x| {
                        EXTENSIONS.contains(&x.to_string_lossy().to_ascii_lowercase().as_str())
                    })
            })
            .collect();
        top.sort();
        if !top.is_empty() {
            let names = |v: &[PathBuf]| {
                let mut s: Vec<String> = v
                    .iter()
                    .take(3)
                    .map(|p| {
                        p.file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .to_string()
                    })
                    .collect();
                if v.len() > 3 {
                    s.push(format!("… {} in all", v.len()));
                }
                s.join(", ")
            };
            return Err(Error::DataSpec {
                spec: spec.to_string(),
                msg: format!(
                    "{} holds both class subfolders ({}) and images at its top level ({}): \
                     the top-level images would have no class. Move them into a class folder, \
                     or point folder: at a directory with only one of the two",
                    dir.display(),
                    names(&classes),
                    names(&top)
                ),
            });
        }
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
    // Headers first: sizes, colour, and the total, before a pixel is decoded.
    let headers: Vec<Header> = files
        .iter()
        .map(|(f, _)| header(f))
        .collect::<Result<_>>()?;
    let out_dims = |hd: &Header| match size {
        Some(n) => (n, n),
        None => (hd.width, hd.height),
    };
    let (w, h) = out_dims(&headers[0]);
    if let Some((i, hd)) = headers
        .iter()
        .enumerate()
        .find(|(_, hd)| out_dims(hd) != (w, h))
    {
        return Err(Error::format(
            &files[i].0,
            format!(
                "is {}×{} where the first image, {}, is {w}×{h}; give a common size with \
                 --set data.size=N (resize and centre-crop to N×N)",
                hd.width,
                hd.height,
                files[0].0.display()
            ),
        ));
    }
    let gray = headers.iter().all(|hd| !hd.color);
    let c: usize = if gray { 1 } else { 3 };
    let (hh, ww) = (h as usize, w as usize);
    let total = files.len() as u64 * c as u64 * hh as u64 * ww as u64;
    if total > MAX_VALUES {
        return Err(Error::DataSpec {
            spec: spec.to_string(),
            msg: format!(
                "{} images of {c}×{hh}×{ww} are {total} values, more than fit in memory (at \
                 most {MAX_VALUES}); resize them smaller with --set data.size=N",
                files.len()
            ),
        });
    }
    let mut x = Vec::with_capacity(total as usize);
    for (f, _) in &files {
        let img = raster::read(f)?;
        let img = match size {
            Some(n) => resize_crop(img, n),
            None => img,
        };
        if (img.width, img.height) != (w, h) {
            return Err(Error::format(
                f,
                format!(
                    "decodes to {}×{} where its header said {w}×{h}",
                    img.width, img.height
                ),
            ));
        }
        if gray {
            x.extend(img.to_grey().iter().map(|&v| v as f32));
        } else {
            // HWC → CHW.
            let raw = img.to_rgb();
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
        if p.exists() && !p.is_file() {
            let what = match entry_kind(&p)? {
                Entry::Dir => "a directory",
                Entry::Other(w) => w,
                Entry::File => "not a regular file",
            };
            return Err(Error::format(
                &p,
                format!("is {what}, not a CIFAR-10 batch file"),
            ));
        }
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
