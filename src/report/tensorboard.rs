//! TensorBoard event files, so that `tensorboard --logdir runs` shows every run: each line of
//! `metrics.jsonl` becomes scalars (one per number in it, tagged by its path, e.g.
//! `eval/total_per_dim`), and each progress grid an image, at the line's step.
//!
//! The format is TFRecord: each record is its length (u64, little-endian), the masked CRC-32C of
//! those 8 bytes, the data, and the masked CRC-32C of the data; the data is an `Event` protocol
//! buffer (wall_time = 1: double, step = 2: int64, file_version = 3: string, summary = 5:
//! `Summary` { repeated value = 1: `Value` { tag = 1: string, simple_value = 2: float,
//! image = 4: `Image` { height = 1, width = 2, colorspace = 3: int32, encoded_image_string = 4:
//! bytes } } }). The first record names the version, `brain.Event:2`. Written here by hand: a
//! few dozen lines, no dependency.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::{Error, Result};

/// CRC-32C (Castagnoli), reflected polynomial 0x82F63B78.
///
/// ```
/// assert_eq!(elbo::report::tensorboard::crc32c(b"123456789"), 0xE306_9283);
/// ```
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: OnceLock<[u32; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// TFRecord's masked CRC: rotate right by 15 and add a constant.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xA282_EAD8)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, ((field as u64) << 3) | wire as u64);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// One value of a summary.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f32),
    /// A PNG and its size.
    Image {
        png: Vec<u8>,
        height: u32,
        width: u32,
    },
}

/// An `Event` with a summary of tagged values (or, with no values, the file-version event).
pub fn event(wall_time: f64, step: i64, values: &[(String, Value)]) -> Vec<u8> {
    let mut e = Vec::new();
    key(&mut e, 1, 1);
    e.extend_from_slice(&wall_time.to_le_bytes());
    key(&mut e, 2, 0);
    varint(&mut e, step as u64);
    if values.is_empty() {
        bytes_field(&mut e, 3, b"brain.Event:2");
        return e;
    }
    let mut summary = Vec::new();
    for (tag, v) in values {
        let mut val = Vec::new();
        bytes_field(&mut val, 1, tag.as_bytes());
        match v {
            Value::Scalar(x) => {
                key(&mut val, 2, 5);
                val.extend_from_slice(&x.to_le_bytes());
            }
            Value::Image { png, height, width } => {
                let mut img = Vec::new();
                key(&mut img, 1, 0);
                varint(&mut img, *height as u64);
                key(&mut img, 2, 0);
                varint(&mut img, *width as u64);
                key(&mut img, 3, 0);
                varint(&mut img, 1);
                bytes_field(&mut img, 4, png);
                bytes_field(&mut val, 4, &img);
            }
        }
        bytes_field(&mut summary, 1, &val);
    }
    bytes_field(&mut e, 5, &summary);
    e
}

/// One TFRecord around `data`.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut r = Vec::with_capacity(data.len() + 16);
    r.extend_from_slice(&len);
    r.extend_from_slice(&masked_crc(&len).to_le_bytes());
    r.extend_from_slice(data);
    r.extend_from_slice(&masked_crc(data).to_le_bytes());
    r
}

/// This process's event file in `dir`: `events.out.tfevents.<start time>.<host>.elbo` (a resumed
/// run adds a file; TensorBoard reads them all).
pub fn event_file(dir: &Path) -> PathBuf {
    static NAME: OnceLock<String> = OnceLock::new();
    let name = NAME.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or_else(|| "localhost".into());
        format!("events.out.tfevents.{t}.{host}.elbo")
    });
    dir.join(name)
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Append an event of `values` at `step` to the run's event file (created with its version
/// record first).
pub fn append(dir: &Path, step: u64, values: &[(String, Value)]) -> Result<()> {
    if values.is_empty() {
        return Ok(());
    }
    let p = event_file(dir);
    let fresh = !p.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(|e| Error::io(&p, e))?;
    let mut buf = Vec::new();
    if fresh {
        buf.extend(record(&event(now(), 0, &[])));
    }
    buf.extend(record(&event(now(), step as i64, values)));
    f.write_all(&buf).map_err(|e| Error::io(&p, e))
}

/// Every number in a metrics line, tagged by its path (`a/b/c`), except the step itself.
pub fn scalars(v: &serde_json::Value) -> Vec<(String, Value)> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, Value)>) {
        match v {
            serde_json::Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    out.push((prefix.to_string(), Value::Scalar(x as f32)));
                }
            }
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}/{k}")
                    };
                    if p != "step" {
                        walk(&p, x, out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

/// A record read back: its event's step, wall time, and values (scalars and image sizes).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadEvent {
    pub wall_time: f64,
    pub step: i64,
    pub file_version: Option<String>,
    pub values: Vec<(String, Value)>,
}

/// Drop, from every event file in `dir`, the events logged after `step` (work lost before a
/// resume, as `metrics.jsonl` drops its lines). A file this module cannot read is left alone.
pub fn truncate(dir: &Path, step: u64) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .starts_with("events.out.tfevents.")
        {
            continue;
        }
        let p = e.path();
        let Ok(events) = read(&p) else {
            continue;
        };
        if events.iter().all(|ev| ev.step as u64 <= step) {
            continue;
        }
        let mut out = Vec::new();
        for ev in events.iter().filter(|ev| ev.step as u64 <= step) {
            let data = match &ev.file_version {
                Some(_) => event(ev.wall_time, ev.step, &[]),
                None => event(ev.wall_time, ev.step, &ev.values),
            };
            out.extend(record(&data));
        }
        crate::fsio::write_atomic(&p, &out)?;
    }
    Ok(())
}

/// Read an event file, checking every length and data CRC.
pub fn read(path: &Path) -> Result<Vec<ReadEvent>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::Invalid(format!("{}: {m}", path.display()));
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes.len() - i < 12 {
            return Err(bad(format!("truncated record header at byte {i}")));
        }
        let len_bytes = &bytes[i..i + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().map_err(|_| bad("length".into()))?);
        let crc = u32::from_le_bytes(
            bytes[i + 8..i + 12]
                .try_into()
                .map_err(|_| bad("crc".into()))?,
        );
        if crc != masked_crc(len_bytes) {
            return Err(bad(format!("length CRC mismatch at byte {i}")));
        }
        let start = i + 12;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e + 4 <= bytes.len())
            .ok_or_else(|| bad(format!("record at byte {i} runs past the end")))?;
        let data = &bytes[start..end];
        let dcrc = u32::from_le_bytes(
            bytes[end..end + 4]
                .try_into()
                .map_err(|_| bad("crc".into()))?,
        );
        if dcrc != masked_crc(data) {
            return Err(bad(format!("data CRC mismatch in the record at byte {i}")));
        }
        out.push(parse_event(data).ok_or_else(|| bad(format!("bad Event at byte {i}")))?);
        i = end + 4;
    }
    Ok(out)
}

/// One field of a protocol buffer message: (field, wire type, varint or fixed value, bytes).
type Field<'a> = (u32, u8, u64, &'a [u8]);

/// The fields of a protocol buffer message.
fn fields(mut b: &[u8]) -> Option<Vec<Field<'_>>> {
    fn read_varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&x, rest) = b.split_first()?;
            *b = rest;
            v |= ((x & 0x7F) as u64) << shift;
            if x & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let k = read_varint(&mut b)?;
        let (field, wire) = ((k >> 3) as u32, (k & 7) as u8);
        match wire {
            0 => out.push((field, 0, read_varint(&mut b)?, &[][..])),
            1 => {
                let (v, rest) = b.split_at_checked(8)?;
                b = rest;
                out.push((field, 1, u64::from_le_bytes(v.try_into().ok()?), &[][..]));
            }
            5 => {
                let (v, rest) = b.split_at_checked(4)?;
                b = rest;
                out.push((
                    field,
                    5,
                    u32::from_le_bytes(v.try_into().ok()?) as u64,
                    &[][..],
                ));
            }
            2 => {
                let n = usize::try_from(read_varint(&mut b)?).ok()?;
                let (v, rest) = b.split_at_checked(n)?;
                b = rest;
                out.push((field, 2, 0, v));
            }
            _ => return None,
        }
    }
    Some(out)
}

fn parse_event(b: &[u8]) -> Option<ReadEvent> {
    let mut e = ReadEvent {
        wall_time: 0.0,
        step: 0,
        file_version: None,
        values: vec![],
    };
    for (f, _, v, bytes) in fields(b)? {
        match f {
            1 => e.wall_time = f64::from_bits(v),
            2 => e.step = v as i64,
            3 => e.file_version = Some(String::from_utf8(bytes.to_vec()).ok()?),
            5 => {
                for (vf, _, _, val) in fields(bytes)? {
                    if vf != 1 {
                        continue;
                    }
                    let mut tag = String::new();
                    let mut value = None;
                    for (k, _, x, xb) in fields(val)? {
                        match k {
                            1 => tag = String::from_utf8(xb.to_vec()).ok()?,
                            2 => value = Some(Value::Scalar(f32::from_bits(x as u32))),
                            4 => {
                                let (mut h, mut w, mut png) = (0, 0, Vec::new());
                                for (ik, _, iv, ib) in fields(xb)? {
                                    match ik {
                                        1 => h = iv as u32,
                                        2 => w = iv as u32,
                                        4 => png = ib.to_vec(),
                                        _ => {}
                                    }
                                }
                                value = Some(Value::Image {
                                    png,
                                    height: h,
                                    width: w,
                                });
                            }
                            _ => {}
                        }
                    }
                    e.values.push((tag, value?));
                }
            }
            _ => {}
        }
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_its_published_check_values() {
        // RFC 3720 §B.4 and the CRC catalogue: "123456789" → 0xE3069283; 32 zero bytes →
        // 0x8A9136AA; 32 bytes 0xFF → 0x62A8AB43.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn events_round_trip_and_corruption_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let line = serde_json::json!({"step": 40, "loss": 0.5, "eval": {"total_per_dim": 1.25}});
        append(dir.path(), 40, &scalars(&line)).unwrap();
        append(
            dir.path(),
            80,
            &[(
                "samples".into(),
                Value::Image {
                    png: vec![0x89, b'P', b'N', b'G'],
                    height: 2,
                    width: 3,
                },
            )],
        )
        .unwrap();
        let p = event_file(dir.path());
        let ev = read(&p).unwrap();
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!(ev[1].step, 40);
        let mut got = ev[1].values.clone();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("eval/total_per_dim".to_string(), Value::Scalar(1.25)),
                ("loss".to_string(), Value::Scalar(0.5)),
            ]
        );
        assert!(ev[1].wall_time > 1.6e9);
        assert_eq!(
            ev[2].values,
            vec![(
                "samples".to_string(),
                Value::Image {
                    png: vec![0x89, b'P', b'N', b'G'],
                    height: 2,
                    width: 3
                }
            )]
        );
        // A resume at step 40 drops what came after it (the image at 80), keeping the rest
        // byte for byte readable.
        truncate(dir.path(), 40).unwrap();
        let kept = read(&p).unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].values.len(), 2);
        truncate(dir.path(), 80).unwrap();
        assert_eq!(read(&p).unwrap().len(), 2);
        // One flipped bit anywhere is caught by a CRC.
        let mut bytes = std::fs::read(&p).unwrap();
        let k = bytes.len() - 7;
        bytes[k] ^= 0x10;
        std::fs::write(&p, &bytes).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("CRC"));
    }
}
