//! The unit a per-dimension bound is reported in, chosen in one place from what the data are.

use serde::{Deserialize, Serialize};

/// The unit a per-dimension figure is reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// 8-bit images (discrete, or dequantised to a density): bits per 8-bit value.
    BitsPerDim,
    /// Binarised images: bits per binary pixel (not comparable with 8-bit bits/dim).
    BitsPerBinaryPixel,
    /// Other continuous data: nats per dimension.
    NatsPerDim,
}

impl Unit {
    /// The unit of a bound on data of this kind: bits per 8-bit value for images, bits per
    /// binary pixel for binarised images, nats per dimension for other continuous data.
    pub fn of(image: bool, binarized: bool) -> Unit {
        if binarized {
            Unit::BitsPerBinaryPixel
        } else if image {
            Unit::BitsPerDim
        } else {
            Unit::NatsPerDim
        }
    }

    /// Per-dimension value of `nats` per example over `dim` dimensions.
    pub fn per_dim(self, nats: f64, dim: usize) -> f64 {
        let d = dim.max(1) as f64;
        match self {
            Unit::BitsPerDim | Unit::BitsPerBinaryPixel => nats / (d * std::f64::consts::LN_2),
            Unit::NatsPerDim => nats / d,
        }
    }

    /// Its name in reports.
    pub fn label(self) -> &'static str {
        match self {
            Unit::BitsPerDim => "bits/dim",
            Unit::BitsPerBinaryPixel => "bits per binary pixel",
            Unit::NatsPerDim => "nats/dim",
        }
    }
}
