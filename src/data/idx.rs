//! IDX files (the MNIST format): a big-endian header `0 0 type ndims`, `ndims` u32 sizes, then the
//! elements, raw or gzip-compressed. Sizes are checked against what the file can back before any
//! allocation, so a header that claims 2^31 images in a 1 kB file is rejected at once.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// Largest expansion gzip (deflate) can reach: 1032:1. A compressed file cannot back more.
const GZIP_MAX_RATIO: u64 = 1032;

/// An IDX array: its dimensions and its elements converted to f32.
#[derive(Debug, Clone)]
pub struct IdxArray {
    /// Sizes from the header, outermost first (e.g. `[n, 28, 28]`).
    pub dims: Vec<usize>,
    /// Elements in row-major order.
    pub values: Vec<f32>,
    /// Whether the element type was u8 (8-bit images and labels).
    pub is_u8: bool,
}

fn element_size(code: u8) -> Option<(usize, &'static str)> {
    match code {
        0x08 => Some((1, "u8")),
        0x09 => Some((1, "i8")),
        0x0B => Some((2, "i16")),
        0x0C => Some((4, "i32")),
        0x0D => Some((4, "f32")),
        0x0E => Some((8, "f64")),
        _ => None,
    }
}

/// Read an IDX file, gzip-compressed or raw (detected from the first two bytes).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_idx_file(&bytes, path)
}

/// Parse the bytes of an IDX file (raw or gzip). `path` is only used in messages.
pub fn parse_idx_file(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    if bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
        let max_out = (bytes.len() as u64).saturating_mul(GZIP_MAX_RATIO);
        let mut dec = flate2::read::GzDecoder::new(bytes);
        // Header first: 4 bytes, then 4 per dimension.
        let mut head = [0u8; 4];
        read_exact_or(&mut dec, &mut head, path, "the IDX header (4 bytes)")?;
        let (code, ndims) = check_magic(&head, path)?;
        let mut dim_bytes = vec![0u8; 4 * ndims];
        read_exact_or(&mut dec, &mut dim_bytes, path, "the IDX dimension sizes")?;
        let dims = parse_dims(&dim_bytes);
        let (esize, _) = element_size(code).ok_or_else(|| bad_type(code, path))?;
        let payload = payload_len(&dims, esize, path)?;
        if payload > max_out {
            return Err(Error::format(
                path,
                format!(
                    "header claims {dims:?} elements ({payload} bytes), more than a {}-byte gzip file can hold",
                    bytes.len()
                ),
            ));
        }
        // Grows only as data really decompresses; reading one byte more detects trailing data.
        let mut data = Vec::new();
        dec.take(payload + 1)
            .read_to_end(&mut data)
            .map_err(|e| Error::format(path, format!("gzip stream is corrupt: {e}")))?;
        finish(code, dims, &data, payload, path)
    } else {
        if bytes.len() < 4 {
            return Err(Error::format(
                path,
                format!("file is {} bytes, too short for an IDX header", bytes.len()),
            ));
        }
        let (code, ndims) = check_magic(&bytes[..4], path)?;
        let header_len = 4 + 4 * ndims;
        if bytes.len() < header_len {
            return Err(Error::format(
                path,
                "file ends inside the IDX dimension sizes",
            ));
        }
        let dims = parse_dims(&bytes[4..header_len]);
        let (esize, _) = element_size(code).ok_or_else(|| bad_type(code, path))?;
        let payload = payload_len(&dims, esize, path)?;
        finish(code, dims, &bytes[header_len..], payload, path)
    }
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], path: &Path, what: &str) -> Result<()> {
    r.read_exact(buf)
        .map_err(|e| Error::format(path, format!("could not read {what}: {e}")))
}

fn check_magic(head: &[u8], path: &Path) -> Result<(u8, usize)> {
    if head[0] != 0 || head[1] != 0 {
        return Err(Error::format(
            path,
            format!(
                "not an IDX file: magic bytes are {:02x} {:02x} {:02x} {:02x}, expected 00 00 <type> <ndims>",
                head[0], head[1], head[2], head[3]
            ),
        ));
    }
    let code = head[2];
    if element_size(code).is_none() {
        return Err(bad_type(code, path));
    }
    let ndims = head[3] as usize;
    if ndims == 0 || ndims > 4 {
        return Err(Error::format(
            path,
            format!("IDX header has {ndims} dimensions; 1 to 4 are supported"),
        ));
    }
    Ok((code, ndims))
}

fn bad_type(code: u8, path: &Path) -> Error {
    Error::format(
        path,
        format!("unknown IDX element type 0x{code:02x} (expected 08 u8, 09 i8, 0B i16, 0C i32, 0D f32 or 0E f64)"),
    )
}

fn parse_dims(b: &[u8]) -> Vec<usize> {
    b.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect()
}

fn payload_len(dims: &[usize], esize: usize, path: &Path) -> Result<u64> {
    dims.iter()
        .try_fold(esize as u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| Error::format(path, format!("IDX sizes {dims:?} overflow")))
}

fn finish(code: u8, dims: Vec<usize>, data: &[u8], payload: u64, path: &Path) -> Result<IdxArray> {
    let have = data.len() as u64;
    if have < payload {
        return Err(Error::format(
            path,
            format!("truncated: header claims {dims:?} ({payload} bytes of data) but only {have} bytes follow"),
        ));
    }
    if have > payload {
        return Err(Error::format(
            path,
            format!(
                "{} bytes of unexpected data after the {dims:?} array",
                have - payload
            ),
        ));
    }
    let (esize, name) = element_size(code).ok_or_else(|| bad_type(code, path))?;
    let values: Vec<f32> = match code {
        0x08 => data.iter().map(|&b| b as f32).collect(),
        0x09 => data.iter().map(|&b| b as i8 as f32).collect(),
        0x0B => data
            .chunks_exact(esize)
            .map(|c| i16::from_be_bytes([c[0], c[1]]) as f32)
            .collect(),
        0x0C => data
            .chunks_exact(esize)
            .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        0x0D => data
            .chunks_exact(esize)
            .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => data
            .chunks_exact(esize)
            .map(|c| f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::format(
            path,
            format!(
                "element {i} is not a finite number ({name} value {})",
                values[i]
            ),
        ));
    }
    Ok(IdxArray {
        dims,
        values,
        is_u8: code == 0x08,
    })
}

/// Encode an array as raw IDX bytes (used by tests and by tools that export data).
pub fn encode_idx_u8(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn p() -> &'static Path {
        Path::new("test.idx")
    }

    #[test]
    fn reads_u8_images_raw_and_gzip() {
        let raw = encode_idx_u8(
            &[2, 2, 3],
            &[0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255],
        );
        let a = parse_idx_file(&raw, p()).unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.values[11], 255.0);
        assert!(a.is_u8);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw).unwrap();
        let b = parse_idx_file(&gz.finish().unwrap(), p()).unwrap();
        assert_eq!(a.values, b.values);
    }

    #[test]
    fn reads_every_element_type() {
        // i16 big-endian -2, f64 1.5
        let mut f = vec![0, 0, 0x0B, 1, 0, 0, 0, 1];
        f.extend_from_slice(&(-2i16).to_be_bytes());
        assert_eq!(parse_idx_file(&f, p()).unwrap().values, vec![-2.0]);
        let mut f = vec![0, 0, 0x0E, 1, 0, 0, 0, 1];
        f.extend_from_slice(&1.5f64.to_be_bytes());
        assert_eq!(parse_idx_file(&f, p()).unwrap().values, vec![1.5]);
        let mut f = vec![0, 0, 0x09, 1, 0, 0, 0, 1, 0xff];
        assert_eq!(parse_idx_file(&f, p()).unwrap().values, vec![-1.0]);
        f[2] = 0x0C;
        f.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert_eq!(parse_idx_file(&f, p()).unwrap().values, vec![-1.0]);
    }

    #[test]
    fn rejects_bad_files_with_clear_messages() {
        let err = |b: &[u8]| parse_idx_file(b, p()).unwrap_err().to_string();
        assert!(err(&[]).contains("too short"));
        assert!(err(&[1, 2, 3, 4, 5]).contains("magic"));
        assert!(err(&[0, 0, 0x42, 1, 0, 0, 0, 1, 0]).contains("element type"));
        assert!(err(&[0, 0, 8, 9]).contains("dimensions"));
        let raw = encode_idx_u8(&[4, 2], &[1, 2, 3]);
        assert!(err(&raw).contains("truncated"));
        let raw = encode_idx_u8(&[1], &[1, 2]);
        assert!(err(&raw).contains("unexpected data"));
        let mut f = vec![0, 0, 0x0D, 1, 0, 0, 0, 1];
        f.extend_from_slice(&f32::NAN.to_be_bytes());
        assert!(err(&f).contains("not a finite"));
    }

    #[test]
    fn absurd_header_rejected_before_allocating() {
        // 2^31 images of 28x28 claimed by a ~1 kB file, raw and gzip.
        let mut raw = encode_idx_u8(&[1 << 31, 28, 28], &[]);
        raw.resize(1024, 0);
        assert!(parse_idx_file(&raw, p())
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw).unwrap();
        let e = parse_idx_file(&gz.finish().unwrap(), p())
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than"), "{e}");
    }
}
