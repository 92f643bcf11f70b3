//! Pictures: sample grids and training curves.

pub mod grid;
pub mod plot;
