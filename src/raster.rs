//! 8-bit raster images: PNG written and read, JPEG read, the centre crop and the triangle-filter
//! resize that an image folder needs. The project's own, on the `png` and `zune-jpeg` decoders,
//! so that a first build does not compile a general image library (and its colour management)
//! for the few operations used here.
//!
//! Pixels are row-major and interleaved: one byte per pixel when grey, three (R, G, B) when in
//! colour. Alpha is dropped as it is decoded (not composited), 16-bit samples are rounded to 8.

use std::io::Cursor;
use std::path::Path;

use crate::{Error, Result};

/// An 8-bit image, grey (`channels` 1) or RGB (3), row-major and interleaved.
#[derive(Clone, Debug, PartialEq)]
pub struct Raster {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub data: Vec<u8>,
}

/// What a file's header says, read without decoding its pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    /// Whether the decoded image has colour (RGB, or a palette); grey otherwise.
    pub color: bool,
}

/// The two formats read.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Png,
    Jpeg,
}

fn sniff(path: &Path, bytes: &[u8]) -> Result<Format> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Ok(Format::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Ok(Format::Jpeg)
    } else {
        Err(Error::format(
            path,
            "not a PNG or JPEG image (unrecognised contents)",
        ))
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn jpeg_options() -> zune_jpeg::zune_core::options::DecoderOptions {
    // JPEG's dimensions are 16-bit; the caller checks the pixel count before decoding.
    zune_jpeg::zune_core::options::DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(u16::MAX as usize)
        .set_max_height(u16::MAX as usize)
}

fn png_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    let mut dec = png::Decoder::new(Cursor::new(bytes));
    let info = dec
        .read_header_info()
        .map_err(|e| Error::format(path, format!("unreadable image header: {e}")))?;
    use png::ColorType as C;
    Ok(Header {
        width: info.width,
        height: info.height,
        color: matches!(info.color_type, C::Rgb | C::Rgba | C::Indexed),
    })
}

fn jpeg_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), jpeg_options());
    dec.decode_headers()
        .map_err(|e| Error::format(path, format!("unreadable image header: {e:?}")))?;
    let (w, h) = dec
        .dimensions()
        .ok_or_else(|| Error::format(path, "unreadable image header"))?;
    let cs = dec
        .input_colorspace()
        .ok_or_else(|| Error::format(path, "unreadable image header"))?;
    Ok(Header {
        width: w as u32,
        height: h as u32,
        color: !matches!(cs, ColorSpace::Luma | ColorSpace::LumaA),
    })
}

/// The header of a PNG or JPEG file: its size and whether it has colour.
pub fn header(path: &Path) -> Result<Header> {
    let bytes = read_bytes(path)?;
    match sniff(path, &bytes)? {
        Format::Png => png_header(path, &bytes),
        Format::Jpeg => jpeg_header(path, &bytes),
    }
}

/// 16-bit samples (big-endian, as PNG stores them) to 8, rounded: v · 255 / 65535.
fn to_8bit(v16: &[u8]) -> Vec<u8> {
    v16.chunks_exact(2)
        .map(|b| {
            let v = u16::from_be_bytes([b[0], b[1]]) as u32;
            ((v * 255 + 32767) / 65535) as u8
        })
        .collect()
}

/// Keep the first `keep` of every `stride` samples (drops alpha).
fn drop_alpha(v: &[u8], stride: usize, keep: usize) -> Vec<u8> {
    v.chunks_exact(stride)
        .flat_map(|p| p[..keep].iter().copied())
        .collect()
}

fn decode_png(path: &Path, bytes: &[u8]) -> Result<Raster> {
    let bad =
        |e: png::DecodingError| Error::format(path, format!("corrupt or truncated image: {e}"));
    // The decoder's own cap on its buffer: 512 MiB, RGBA at 16 bits for the 64 M pixels that an
    // image folder accepts (the caller checks the header's size before decoding).
    let limits = png::Limits {
        bytes: 512 * 1024 * 1024,
    };
    let mut dec = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    // Palettes to RGB(A), transparency to alpha, 1/2/4-bit grey to 8.
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(bad)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| Error::format(path, "image too large to decode"))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(bad)?;
    buf.truncate(frame.buffer_size());
    let samples = match frame.bit_depth {
        png::BitDepth::Sixteen => to_8bit(&buf),
        png::BitDepth::Eight => buf,
        d => {
            return Err(Error::format(
                path,
                format!("unexpected bit depth {d:?} after expansion"),
            ))
        }
    };
    use png::ColorType as C;
    let (channels, data) = match frame.color_type {
        C::Grayscale => (1, samples),
        C::GrayscaleAlpha => (1, drop_alpha(&samples, 2, 1)),
        C::Rgb => (3, samples),
        C::Rgba => (3, drop_alpha(&samples, 4, 3)),
        C::Indexed => {
            return Err(Error::format(path, "a palette image was not expanded"));
        }
    };
    finish(path, frame.width, frame.height, channels, data)
}

fn decode_jpeg(path: &Path, bytes: &[u8]) -> Result<Raster> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    let hd = jpeg_header(path, bytes)?;
    let out = if hd.color {
        ColorSpace::RGB
    } else {
        ColorSpace::Luma
    };
    let opts = jpeg_options().jpeg_set_out_colorspace(out);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    let data = dec
        .decode()
        .map_err(|e| Error::format(path, format!("corrupt or truncated image: {e:?}")))?;
    let channels = if hd.color { 3 } else { 1 };
    finish(path, hd.width, hd.height, channels, data)
}

fn finish(path: &Path, width: u32, height: u32, channels: u8, data: Vec<u8>) -> Result<Raster> {
    let want = width as usize * height as usize * channels as usize;
    if data.len() != want {
        return Err(Error::format(
            path,
            format!(
                "decodes to {} values where {width}×{height}×{channels} needs {want}",
                data.len()
            ),
        ));
    }
    Ok(Raster {
        width,
        height,
        channels,
        data,
    })
}

/// Decode a PNG or JPEG file (check its [`header`] first where its size is not trusted).
pub fn read(path: &Path) -> Result<Raster> {
    let bytes = read_bytes(path)?;
    match sniff(path, &bytes)? {
        Format::Png => decode_png(path, &bytes),
        Format::Jpeg => decode_jpeg(path, &bytes),
    }
}

impl Raster {
    /// A `width`×`height` image of one colour (its length says grey or RGB).
    pub fn filled(width: u32, height: u32, colour: &[u8]) -> Raster {
        let n = width as usize * height as usize;
        Raster {
            width,
            height,
            channels: colour.len() as u8,
            data: colour
                .iter()
                .copied()
                .cycle()
                .take(n * colour.len())
                .collect(),
        }
    }

    /// Set pixel (x, y) to `colour` (as many values as channels); outside the image: nothing.
    pub fn put(&mut self, x: u32, y: u32, colour: &[u8]) {
        if x < self.width && y < self.height {
            let c = self.channels as usize;
            let at = (y as usize * self.width as usize + x as usize) * c;
            self.data[at..at + c].copy_from_slice(&colour[..c]);
        }
    }

    /// The grey values (one per pixel): as they are when grey, Rec. 709 luma when in colour.
    pub fn to_grey(&self) -> Vec<u8> {
        if self.channels == 1 {
            return self.data.clone();
        }
        self.data
            .chunks_exact(3)
            .map(|p| {
                let l = 0.2126 * p[0] as f32 + 0.7152 * p[1] as f32 + 0.0722 * p[2] as f32;
                l.round().clamp(0.0, 255.0) as u8
            })
            .collect()
    }

    /// The RGB values (three per pixel): grey repeated when grey.
    pub fn to_rgb(&self) -> Vec<u8> {
        if self.channels == 3 {
            return self.data.clone();
        }
        self.data.iter().flat_map(|&v| [v, v, v]).collect()
    }

    /// This image in RGB.
    pub fn into_rgb(self) -> Raster {
        Raster {
            data: self.to_rgb(),
            channels: 3,
            ..self
        }
    }

    /// The `w`×`h` rectangle at (x0, y0) (which must lie inside the image).
    pub fn crop(&self, x0: u32, y0: u32, w: u32, h: u32) -> Raster {
        let c = self.channels as usize;
        let mut data = Vec::with_capacity(w as usize * h as usize * c);
        for y in y0..y0 + h {
            let at = (y as usize * self.width as usize + x0 as usize) * c;
            data.extend_from_slice(&self.data[at..at + w as usize * c]);
        }
        Raster {
            width: w,
            height: h,
            channels: self.channels,
            data,
        }
    }

    /// Copy `src` (same channels) into this image with its top-left corner at (x0, y0), clipped.
    pub fn paste(&mut self, src: &Raster, x0: u32, y0: u32) {
        let c = self.channels as usize;
        for y in 0..src.height.min(self.height.saturating_sub(y0)) {
            let w = src.width.min(self.width.saturating_sub(x0)) as usize;
            let s = y as usize * src.width as usize * c;
            let d = ((y0 + y) as usize * self.width as usize + x0 as usize) * c;
            self.data[d..d + w * c].copy_from_slice(&src.data[s..s + w * c]);
        }
    }

    /// Resized to `w`×`h` by the triangle (linear) filter, widened by the scale when shrinking so
    /// that every source pixel contributes (antialiased): rows first, into f32, then columns,
    /// rounded to the nearest level.
    pub fn resize(&self, w: u32, h: u32) -> Raster {
        if (w, h) == (self.width, self.height) {
            return self.clone();
        }
        let c = self.channels as usize;
        let (sw, sh) = (self.width as usize, self.height as usize);
        // Vertical pass: [h][sw][c] in f32.
        let taps_v = taps(sh, h as usize);
        let mut mid = vec![0f32; h as usize * sw * c];
        for (oy, (left, ws)) in taps_v.iter().enumerate() {
            let row = &mut mid[oy * sw * c..(oy + 1) * sw * c];
            for (k, &wt) in ws.iter().enumerate() {
                let src = &self.data[(left + k) * sw * c..(left + k + 1) * sw * c];
                for (m, &v) in row.iter_mut().zip(src) {
                    *m += wt * v as f32;
                }
            }
        }
        // Horizontal pass.
        let taps_h = taps(sw, w as usize);
        let mut data = vec![0u8; h as usize * w as usize * c];
        for y in 0..h as usize {
            let row = &mid[y * sw * c..(y + 1) * sw * c];
            for (ox, (left, ws)) in taps_h.iter().enumerate() {
                for ch in 0..c {
                    let mut t = 0f32;
                    for (k, &wt) in ws.iter().enumerate() {
                        t += wt * row[(left + k) * c + ch];
                    }
                    data[(y * w as usize + ox) * c + ch] = t.clamp(0.0, 255.0).round() as u8;
                }
            }
        }
        Raster {
            width: w,
            height: h,
            channels: self.channels,
            data,
        }
    }

    /// Encode as PNG (grey or RGB, 8-bit).
    pub fn png_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width, self.height);
            enc.set_color(if self.channels == 3 {
                png::ColorType::Rgb
            } else {
                png::ColorType::Grayscale
            });
            enc.set_depth(png::BitDepth::Eight);
            let fail = |e: png::EncodingError| Error::Shape(format!("PNG encoding failed: {e}"));
            let mut w = enc.write_header().map_err(fail)?;
            w.write_image_data(&self.data).map_err(fail)?;
            w.finish().map_err(fail)?;
        }
        Ok(out)
    }

    /// Write as a PNG file, atomically (a crash leaves the previous file whole).
    pub fn save_png(&self, path: &Path) -> Result<()> {
        crate::fsio::write_atomic(path, &self.png_bytes()?)
    }
}

/// For each of `n_out` output positions along an axis of `n_in` samples: the first source index
/// and the normalised triangle weights from there on (support 1, widened by the ratio when
/// shrinking).
fn taps(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f32>)> {
    let ratio = n_in as f32 / n_out as f32;
    let sratio = ratio.max(1.0);
    let support = sratio;
    (0..n_out)
        .map(|o| {
            let centre = (o as f32 + 0.5) * ratio;
            let left = ((centre - support).floor() as i64).clamp(0, n_in as i64 - 1) as usize;
            let right =
                ((centre + support).ceil() as i64).clamp(left as i64 + 1, n_in as i64) as usize;
            let centre = centre - 0.5;
            let mut ws: Vec<f32> = (left..right)
                .map(|i| (1.0 - ((i as f32 - centre) / sratio).abs()).max(0.0))
                .collect();
            let sum: f32 = ws.iter().sum();
            if sum > 0.0 {
                ws.iter_mut().for_each(|w| *w /= sum);
            } else {
                // Only when a tap set misses the kernel entirely: the nearest sample.
                ws.iter_mut().for_each(|w| *w = 0.0);
                ws[0] = 1.0;
            }
            (left, ws)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trips_grey_and_rgb() {
        let dir = tempfile::tempdir().unwrap();
        for c in [1u8, 3] {
            let mut r = Raster::filled(5, 3, &vec![7; c as usize]);
            r.put(4, 2, &[200, 100, 50][..c as usize]);
            r.put(9, 9, &[1, 1, 1]); // outside: ignored
            let p = dir.path().join(format!("{c}.png"));
            r.save_png(&p).unwrap();
            assert_eq!(
                header(&p).unwrap(),
                Header {
                    width: 5,
                    height: 3,
                    color: c == 3
                }
            );
            assert_eq!(read(&p).unwrap(), r);
        }
    }

    #[test]
    fn resize_is_the_identity_at_the_same_size_and_keeps_a_constant() {
        let r = Raster::filled(7, 5, &[1, 2, 3]);
        assert_eq!(r.resize(7, 5), r);
        for (w, h) in [(3, 2), (14, 11), (1, 1)] {
            let s = r.resize(w, h);
            assert_eq!(
                (s.width, s.height, s.data.len()),
                (w, h, (w * h * 3) as usize)
            );
            assert!(s.data.chunks(3).all(|p| p == [1, 2, 3]), "{w}x{h}");
        }
    }

    #[test]
    fn halving_averages_pairs_and_a_ramp_stays_a_ramp() {
        // Shrinking by 2 with the widened triangle: output pixel o sits at source 2o + 0.5, with
        // weights ⅛, ⅜, ⅜, ⅛ on 2o − 1 … 2o + 2 (the ends clipped and renormalised).
        let g = Raster {
            width: 8,
            height: 1,
            channels: 1,
            data: vec![0, 40, 80, 120, 160, 200, 240, 255],
        };
        let s = g.resize(4, 1);
        let w = [0.125f32, 0.375, 0.375, 0.125];
        let expect = |o: usize| {
            let (mut t, mut sum) = (0f32, 0f32);
            for (k, wt) in w.iter().enumerate() {
                let i = 2 * o as i64 - 1 + k as i64;
                if (0..8).contains(&i) {
                    t += wt * g.data[i as usize] as f32;
                    sum += wt;
                }
            }
            (t / sum).round() as u8
        };
        let want: Vec<u8> = (0..4).map(expect).collect();
        assert_eq!(s.data, want);
        assert!(s.data.windows(2).all(|p| p[0] < p[1]));
    }

    #[test]
    fn crop_paste_and_grey() {
        let mut r = Raster::filled(4, 4, &[0, 0, 0]);
        r.put(1, 2, &[255, 255, 255]);
        let c = r.crop(1, 1, 2, 2);
        assert_eq!(c.data, [0, 0, 0, 0, 0, 0, 255, 255, 255, 0, 0, 0]);
        let mut big = Raster::filled(3, 3, &[9, 9, 9]);
        big.paste(&c, 2, 1); // clipped to one column
        assert_eq!(&big.data[(3 + 2) * 3..(3 + 2) * 3 + 3], [0, 0, 0]);
        assert_eq!(&big.data[(6 + 2) * 3..(6 + 2) * 3 + 3], [255, 255, 255]);
        assert_eq!(c.to_grey(), [0, 0, 255, 0]);
        assert_eq!(
            Raster::filled(1, 1, &[10, 20, 30]).to_grey(),
            [(0.2126f32 * 10.0 + 0.7152 * 20.0 + 0.0722 * 30.0).round() as u8]
        );
    }

    #[test]
    fn garbage_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.png");
        std::fs::write(&p, b"hello, not an image").unwrap();
        let e = header(&p).unwrap_err().to_string();
        assert!(
            e.contains("x.png") && e.contains("not a PNG or JPEG"),
            "{e}"
        );
        std::fs::write(&p, b"\x89PNG\r\n\x1a\n\0\0").unwrap();
        assert!(read(&p).is_err());
        std::fs::write(&p, [0xFF, 0xD8, 0xFF, 0xE0, 0, 1]).unwrap();
        assert!(read(&p).is_err());
    }
}
