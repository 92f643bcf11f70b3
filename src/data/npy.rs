//! `.npy` files (NumPy's format): a magic string, a header dict (`descr`, `fortran_order`,
//! `shape`), then the data. Two-dimensional float32/float64 arrays in C order are read; the data
//! size is checked against the header before anything is allocated.

use std::path::Path;

use crate::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// A 2-D float array read from `.npy`.
#[derive(Debug, Clone)]
pub struct NpyArray {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>,
}

/// Read a 2-D float32/float64 C-order `.npy` file (a 1-D file is read as one column).
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_npy(&bytes, path)
}

fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let k = format!("'{key}'");
    let i = header.find(&k)? + k.len();
    let rest = header[i..].trim_start().strip_prefix(':')?.trim_start();
    Some(rest)
}

/// Parse `.npy` bytes. `path` is only used in messages.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<NpyArray> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(Error::format(
            path,
            "not a .npy file (missing the \\x93NUMPY magic)",
        ));
    }
    let major = bytes[6];
    let (hlen, start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(Error::format(path, "truncated .npy header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(Error::format(path, format!("unsupported .npy version {v}"))),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            Error::format(
                path,
                "truncated: the .npy header runs past the end of the file",
            )
        })?;
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| Error::format(path, ".npy header is not text"))?;
    let descr = header_value(header, "descr")
        .and_then(|v| v.strip_prefix('\''))
        .and_then(|v| v.split('\'').next())
        .ok_or_else(|| Error::format(path, ".npy header has no 'descr'"))?;
    let (esize, little, is_f64) = match descr {
        "<f4" | "=f4" | "|f4" => (4, true, false),
        ">f4" => (4, false, false),
        "<f8" | "=f8" | "|f8" => (8, true, true),
        ">f8" => (8, false, true),
        d => {
            return Err(Error::format(
                path,
                format!(
                    ".npy element type '{d}' is not supported (use float32 '<f4' or float64 '<f8')"
                ),
            ))
        }
    };
    let fortran = header_value(header, "fortran_order")
        .ok_or_else(|| Error::format(path, ".npy header has no 'fortran_order'"))?;
    if fortran.starts_with("True") {
        return Err(Error::format(
            path,
            ".npy array is in Fortran order; save it with np.ascontiguousarray first",
        ));
    }
    let shape_str = header_value(header, "shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| Error::format(path, ".npy header has no 'shape'"))?;
    let dims: Vec<usize> = shape_str
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            Error::format(
                path,
                format!(".npy shape '({shape_str})' is not a list of sizes"),
            )
        })?;
    let (rows, cols) = match dims.as_slice() {
        [n] => (*n, 1),
        [n, d] => (*n, *d),
        _ => {
            return Err(Error::format(
                path,
                format!(".npy array has shape {dims:?}; a 2-D array (N, D) is expected"),
            ))
        }
    };
    let payload = (rows as u64)
        .checked_mul(cols as u64)
        .and_then(|n| n.checked_mul(esize as u64))
        .ok_or_else(|| Error::format(path, format!(".npy shape {dims:?} overflows")))?;
    let have = (bytes.len() - end) as u64;
    if have != payload {
        return Err(Error::format(
            path,
            format!(
                "{}: header claims shape {dims:?} ({payload} bytes of data) but {have} bytes follow",
                if have < payload { "truncated" } else { "size mismatch" }
            ),
        ));
    }
    if rows == 0 || cols == 0 {
        return Err(Error::format(
            path,
            format!(".npy array is empty (shape {dims:?})"),
        ));
    }
    let data = &bytes[end..];
    let values: Vec<f32> = if is_f64 {
        data.chunks_exact(8)
            .map(|c| {
                let b = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
                (if little {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                }) as f32
            })
            .collect()
    } else {
        data.chunks_exact(4)
            .map(|c| {
                let b = [c[0], c[1], c[2], c[3]];
                if little {
                    f32::from_le_bytes(b)
                } else {
                    f32::from_be_bytes(b)
                }
            })
            .collect()
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::format(
            path,
            format!(
                "row {}, column {} is not a finite number ({})",
                i / cols,
                i % cols,
                values[i]
            ),
        ));
    }
    Ok(NpyArray { rows, cols, values })
}

/// Encode a 2-D float32 array as `.npy` bytes (for `elbo sample --out x.npy` and tests).
pub fn encode_npy_f32(rows: usize, cols: usize, values: &[f32]) -> Vec<u8> {
    let mut out = npy_header_f32(rows, cols);
    out.reserve(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The header of a C-order float32 `.npy` of `rows` × `cols` (the values follow it).
pub fn npy_header_f32(rows: usize, cols: usize) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Pad so that magic + version + len + header + '\n' is a multiple of 64.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// `npy:FILE` as a data set of continuous rows (all of them; the caller splits).
pub(super) fn load_npy(spec: &str, path: &std::path::Path) -> Result<super::Dataset> {
    let a = read_npy(path)?;
    Ok(super::Dataset {
        spec: spec.to_string(),
        split: super::Split::All,
        n: a.rows,
        shape: vec![a.cols],
        kind: super::DataKind::Continuous,
        x: a.values,
        labels: None,
        mixture: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x.npy")
    }

    #[test]
    fn round_trip_f32() {
        let b = encode_npy_f32(2, 3, &[1., 2., 3., 4., 5., -6.]);
        assert_eq!(b.len() % 64, 24); // header block 64 bytes, then 24 data bytes
        let a = parse_npy(&b, p()).unwrap();
        assert_eq!((a.rows, a.cols), (2, 3));
        assert_eq!(a.values[5], -6.0);
    }

    #[test]
    fn reads_f64() {
        let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }";
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&0.25f64.to_le_bytes());
        b.extend_from_slice(&(-2.0f64).to_le_bytes());
        assert_eq!(parse_npy(&b, p()).unwrap().values, vec![0.25, -2.0]);
    }

    #[test]
    fn rejects_bad_files() {
        let err = |b: &[u8]| parse_npy(b, p()).unwrap_err().to_string();
        assert!(err(b"hello world").contains("magic"));
        let good = encode_npy_f32(2, 2, &[1., 2., 3., 4.]);
        assert!(err(&good[..good.len() - 3]).contains("truncated"));
        assert!(err(&good[..20]).contains("truncated"));
        let mut nan = good.clone();
        let n = nan.len();
        nan[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(err(&nan).contains("row 1, column 1"));
        let huge = String::from_utf8_lossy(&good[10..good.len() - 16])
            .replace("(2, 2)", "(99999999999, 2)");
        let mut b = good[..8].to_vec();
        b.extend_from_slice(&(huge.len() as u16).to_le_bytes());
        b.extend_from_slice(huge.as_bytes());
        b.extend_from_slice(&good[good.len() - 16..]);
        assert!(err(&b).contains("truncated"));
        let mut i8 = good.clone();
        let at = i8.windows(3).position(|w| w == b"<f4").unwrap();
        i8[at..at + 3].copy_from_slice(b"|i1");
        assert!(err(&i8).contains("not supported"));
        assert!(err(&encode_npy_f32(0, 2, &[])).contains("empty"));
    }
}
