//! PNG grids of images: grey (`[n, h, w]`) or colour (`[n, 3, h, w]`, channels first).

use std::path::Path;

use crate::raster::{self, Raster};
use crate::{Error, Result};

/// Write `n` images (`[n, h, w]` row-major, values in [0, 1]) as a near-square grid with a
/// 2-pixel border, scaled up `zoom` times.
pub fn save_grid(
    path: &Path,
    images: &[f32],
    n: usize,
    h: usize,
    w: usize,
    zoom: u32,
) -> Result<()> {
    let cols = (n as f64).sqrt().ceil() as usize;
    save_grid_cols(path, images, n, cols, h, w, zoom)
}

/// The same with `cols` images per row (row after row, in order).
pub fn save_grid_cols(
    path: &Path,
    images: &[f32],
    n: usize,
    cols: usize,
    h: usize,
    w: usize,
    zoom: u32,
) -> Result<()> {
    let c = if n > 0 && images.len() == 3 * n * h * w {
        3
    } else {
        1
    };
    if n == 0 || cols == 0 || images.len() != c * n * h * w {
        return Err(Error::Shape(format!(
            "grid of {n} images of {h}x{w} needs {} values (or 3 times as many in colour), got {}",
            n * h * w,
            images.len()
        )));
    }
    let rows = n.div_ceil(cols);
    let pad = 2;
    let z = zoom.max(1) as usize;
    let (gw, gh) = (cols * (w * z + pad) + pad, rows * (h * z + pad) + pad);
    // Grey grids are written as grey PNGs.
    let mut img = Raster::filled(gw as u32, gh as u32, &[64, 64, 64][..c]);
    let px = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    for k in 0..n {
        let (r, col) = (k / cols, k % cols);
        let (x0, y0) = (pad + col * (w * z + pad), pad + r * (h * z + pad));
        let base = k * c * h * w;
        for i in 0..h * z {
            for j in 0..w * z {
                let at = (i / z) * w + j / z;
                let mut v = [0u8; 3];
                for (ch, v) in v.iter_mut().enumerate().take(c) {
                    *v = px(images[base + ch * h * w + at]);
                }
                img.put((x0 + j) as u32, (y0 + i) as u32, &v[..c]);
            }
        }
    }
    img.save_png(path)
}

/// Grey images side by side, left to right, with a 6-pixel white gap: a strip of grids.
pub fn save_strip(path: &Path, images: &[&std::path::PathBuf]) -> Result<()> {
    let loaded: Vec<Raster> = images
        .iter()
        .map(|p| raster::read(p).map(Raster::into_rgb))
        .collect::<Result<_>>()?;
    if loaded.is_empty() {
        return Err(Error::Shape("no images for a strip".into()));
    }
    let gap = 6;
    let h = loaded.iter().map(|i| i.height).max().unwrap_or(1);
    let w: u32 = loaded.iter().map(|i| i.width).sum::<u32>() + gap * (loaded.len() as u32 - 1);
    let mut out = Raster::filled(w, h, &[255, 255, 255]);
    let mut x = 0;
    for i in &loaded {
        out.paste(i, x, 0);
        x += i.width + gap;
    }
    out.save_png(path)
}

/// A scatter plot of 2-D points as a PNG (for samples of 2-D data): points in a square window.
pub fn save_scatter(path: &Path, points: &[f32], size: u32) -> Result<()> {
    let n = points.len() / 2;
    if n == 0 {
        return Err(Error::Shape("no points to plot".into()));
    }
    let xs: Vec<f32> = points.iter().step_by(2).copied().collect();
    let ys: Vec<f32> = points.iter().skip(1).step_by(2).copied().collect();
    let lo = xs.iter().chain(&ys).cloned().fold(f32::INFINITY, f32::min);
    let hi = xs
        .iter()
        .chain(&ys)
        .cloned()
        .fold(f32::NEG_INFINITY, f32::max);
    let span = (hi - lo).max(1e-6) * 1.1;
    let mid = (hi + lo) / 2.0;
    let mut img = Raster::filled(size, size, &[255, 255, 255]);
    for (x, y) in xs.iter().zip(&ys) {
        let px = (((x - mid) / span + 0.5) * size as f32) as i64;
        let py = ((0.5 - (y - mid) / span) * size as f32) as i64;
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let (a, b) = (px + dx, py + dy);
            if a >= 0 && b >= 0 && a < size as i64 && b < size as i64 {
                img.put(a as u32, b as u32, &[30, 60, 160]);
            }
        }
    }
    img.save_png(path)
}
