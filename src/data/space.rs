//! The data space of the diffusion models (the VDM, the NCSN) and of the noisy classifier that
//! guides them: what the data are, their shape, the standardisation of continuous data, and
//! the classes of a conditional model. Built in one place ([`DataSpace::of`]) from a training
//! split, and saved in a run's `model.json`.

use serde::{Deserialize, Serialize};

use super::{DataKind, Dataset, Scaling};

/// What a diffusion model (or a classifier of its noisy inputs) knows of its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSpace {
    pub kind: DataKind,
    pub shape: Vec<usize>,
    /// Standardisation of continuous data (empty for images).
    pub shift: Vec<f32>,
    pub scale: Vec<f32>,
    /// Classes of a conditional model (0: unconditional).
    #[serde(default)]
    pub classes: usize,
}

impl DataSpace {
    /// The space of a training split: images as they are, continuous data standardised by
    /// `scaling`; `classes` for a class-conditional model (0: unconditional).
    pub fn of(train: &Dataset, scaling: Scaling, classes: usize) -> DataSpace {
        let (shift, scale) = match train.kind {
            DataKind::Image8 => (vec![], vec![]),
            DataKind::Continuous => train.affine(scaling),
        };
        DataSpace {
            kind: train.kind,
            shape: train.shape.clone(),
            shift,
            scale,
            classes,
        }
    }

    /// Unconditional vectors of `d` values used as given (shift 0, scale 1).
    pub fn unscaled(d: usize) -> Self {
        DataSpace {
            kind: DataKind::Continuous,
            shape: vec![d],
            shift: vec![0.0; d],
            scale: vec![1.0; d],
            classes: 0,
        }
    }

    /// The number of values per example.
    pub fn dim(&self) -> usize {
        self.shape.iter().product()
    }

    /// The classes of a labelled split (the largest label + 1; 0 without labels).
    pub fn classes_of(train: &Dataset) -> usize {
        train
            .labels
            .as_ref()
            .and_then(|l| l.iter().max())
            .map_or(0, |&m| m as usize + 1)
    }
}
