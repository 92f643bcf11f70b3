//! Line plots as PNG (training curves, loss per time), drawn with plotters. Text needs a TrueType
//! font: the first of a few common system fonts that exists is used; without one, the plot is
//! drawn without labels.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::{Error, Result};

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, leaked).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// One named line of (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
    /// Also mark each point with a dot (for sparse series, such as held-out evaluations).
    pub markers: bool,
}

/// The label of a log axis's tick at `x`: only 1, 2 and 5 times a power of ten are labelled,
/// the others would run into each other (their grid lines stay).
fn log_axis_label(x: f64) -> String {
    let m = x / 10f64.powf(x.log10().floor());
    if [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|k| (m - k).abs() < 1e-6 * k)
    {
        format!("{}", (x * 1e6).round() / 1e6)
    } else {
        String::new()
    }
}

/// Plot lines to a PNG of 900×500 pixels. `log_x` puts x on a log scale.
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
) -> Result<()> {
    let err = |e: String| Error::Io {
        path: path.into(),
        error: std::io::Error::other(e),
    };
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_x || *x > 0.0))
        .collect();
    if pts.is_empty() {
        return Err(err("nothing to plot".into()));
    }
    let (mut x0, mut x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
        (a.0.min(p.0), a.1.max(p.0))
    });
    let (mut y0, mut y1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
        (a.0.min(p.1), a.1.max(p.1))
    });
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
        y0 -= 1.0;
    }
    let pad = (y1 - y0) * 0.05;
    let (y0, y1) = (y0 - pad, y1 + pad);
    if log_x {
        x0 = x0.max(1e-12);
    }
    let text = font_available();
    let (w, h) = (900u32, 500u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let colors = [
            BLUE,
            RED,
            GREEN,
            MAGENTA,
            CYAN,
            BLACK,
            RGBColor(230, 140, 0),
            RGBColor(128, 128, 128),
        ];
        macro_rules! draw {
            ($xr:expr) => {{
                let mut b = ChartBuilder::on(&root);
                b.margin(15);
                if text {
                    b.caption(title, ("sans-serif", 22))
                        .x_label_area_size(40)
                        .y_label_area_size(70);
                } else {
                    b.x_label_area_size(5).y_label_area_size(5);
                }
                let mut chart = b
                    .build_cartesian_2d($xr, y0..y1)
                    .map_err(|e| err(e.to_string()))?;
                let mut mesh = chart.configure_mesh();
                let log_label = |x: &f64| log_axis_label(*x);
                if log_x {
                    mesh.x_label_formatter(&log_label);
                }
                if text {
                    mesh.x_desc(x_label).y_desc(y_label);
                } else {
                    mesh.disable_x_axis().disable_y_axis();
                }
                mesh.draw().map_err(|e| err(e.to_string()))?;
                for (i, s) in series.iter().enumerate() {
                    let c = colors[i % colors.len()];
                    let line = chart
                        .draw_series(LineSeries::new(
                            s.points.iter().copied().filter(|(x, y)| {
                                x.is_finite() && y.is_finite() && (!log_x || *x > 0.0)
                            }),
                            c.stroke_width(2),
                        ))
                        .map_err(|e| err(e.to_string()))?;
                    if text {
                        line.label(s.name).legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                        });
                    }
                    if s.markers {
                        chart
                            .draw_series(
                                s.points
                                    .iter()
                                    .copied()
                                    .filter(|(x, y)| {
                                        x.is_finite() && y.is_finite() && (!log_x || *x > 0.0)
                                    })
                                    .map(|p| Circle::new(p, 4, c.filled())),
                            )
                            .map_err(|e| err(e.to_string()))?;
                    }
                }
                if text && series.len() > 1 {
                    chart
                        .configure_series_labels()
                        .background_style(WHITE.mix(0.8))
                        .border_style(BLACK)
                        .draw()
                        .map_err(|e| err(e.to_string()))?;
                }
            }};
        }
        if log_x {
            draw!((x0..x1).log_scale());
        } else {
            draw!(x0..x1);
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    if buf.len() != 3 * w as usize * h as usize {
        return Err(err("plot buffer has the wrong size".into()));
    }
    crate::raster::Raster {
        width: w,
        height: h,
        channels: 3,
        data: buf,
    }
    .save_png(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_axis_labels_one_two_and_five_times_a_power_of_ten() {
        let labels: Vec<String> = [3.0, 5.0, 10.0, 20.0, 30.0, 70.0, 80.0, 100.0, 200.0, 0.2]
            .iter()
            .map(|&x| log_axis_label(x))
            .collect();
        assert_eq!(
            labels,
            ["", "5", "10", "20", "", "", "", "100", "200", "0.2"],
            "{labels:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("log.png");
        let points = [4.0, 8.0, 16.0, 32.0, 200.0]
            .map(|x| (x, 1000.0 / x))
            .to_vec();
        line_plot(
            &png,
            "t",
            "x",
            "y",
            &[Series {
                name: "a",
                points,
                markers: true,
            }],
            true,
        )
        .unwrap();
        assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    }
}
