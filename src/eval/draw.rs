//! Samples of a trained run, in data units, whatever its model.

use super::Progress;
use crate::models::{Model, ModelVisitor, SampleOptions};
use crate::train::load_model;
use crate::train::run::{ModelFile, RunDir};
use crate::Result;

/// Samples of a run: row-major `[n, D]` in data units, with the value of a white pixel (1 for
/// the Bernoulli means of binarised images, 255 for 8-bit levels).
#[derive(Debug, Clone)]
pub struct Samples {
    pub file: ModelFile,
    pub values: Vec<f32>,
    pub white: f32,
}

/// Draw `n` samples from the EMA weights of the run in `dir`.
pub fn draw(
    dir: &RunDir,
    n: usize,
    opts: &SampleOptions,
    device: &burn::tensor::Device,
    progress: &dyn Progress,
) -> Result<Samples> {
    dir.check()?;
    let cfg = dir.config()?;
    struct Visit<'a> {
        dir: &'a RunDir,
        n: usize,
        opts: &'a SampleOptions,
        device: &'a burn::tensor::Device,
        progress: &'a dyn Progress,
    }
    impl ModelVisitor for Visit<'_> {
        type Output = Result<Samples>;
        fn visit<M: Model>(self, section: &M::Config) -> Self::Output {
            let l = load_model::<M>(self.dir, section, self.device)?;
            let binary = M::binarize(&l.section, &l.spec).is_some();
            self.progress
                .start("sampling", l.model.sample_work(self.n, self.opts));
            let tick = || self.progress.inc(1);
            let values = l.model.draw(self.n, self.opts, &tick)?;
            self.progress.finish();
            Ok(Samples {
                file: l.file,
                values,
                white: if binary { 1.0 } else { 255.0 },
            })
        }
    }
    cfg.model.visit(Visit {
        dir,
        n,
        opts,
        device,
        progress,
    })
}
