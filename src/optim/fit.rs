//! The one training loop: steps of AdamW on a loss, from a step count to another, with a
//! stop on a non-finite loss or gradient naming the step. Everything a particular training
//! adds (metrics, held-out evaluation, sample grids, checkpoints, a time budget, Ctrl-C) hangs
//! on its [`FitHooks`]; the main run, the noisy classifier and the quality classifier all train
//! through it.

use super::{AdamW, OptimConfig};
use crate::params::NamedParams;
use crate::{Error, Result};

/// One step's loss: what was minimised, a second figure to report beside it (the −ELBO where
/// the loss is another objective), the gradient of the loss, and the examples it saw.
pub struct StepLoss {
    pub loss: f64,
    pub report: f64,
    pub grads: NamedParams,
    pub examples: usize,
}

/// A step done.
#[derive(Debug, Clone, Copy)]
pub struct StepDone {
    /// Steps done, this one included.
    pub step: u64,
    pub loss: f64,
    pub report: f64,
    /// The gradient's global norm (before clipping).
    pub grad_norm: f64,
    pub lr: f64,
    pub examples: usize,
}

/// Why a loop ended before its last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to stop (Ctrl-C, SIGTERM).
    Interrupted,
    /// Its time budget ran out.
    TimedOut,
}

/// What a training adds around the loop.
pub trait FitHooks {
    /// Before the step after `done` steps: `Some` ends the loop there.
    fn before(&mut self, _done: u64) -> Option<Stopped> {
        None
    }
    /// After each step, with the updated parameters and optimiser.
    fn after(&mut self, _s: &StepDone, _params: &NamedParams, _opt: &AdamW) -> Result<()> {
        Ok(())
    }
    /// The step of the last checkpoint kept (named when a non-finite loss stops the loop).
    fn last_checkpoint(&self) -> u64 {
        0
    }
}

/// No hooks: a plain loop.
impl FitHooks for () {}

/// Train `params` with `opt` from step `start` to `total` (the learning-rate schedule runs over
/// `total`): each step asks `loss(step, params)` for the loss and its gradient, then takes one
/// AdamW step. Returns the steps done and, if it ended early, why.
pub fn fit(
    params: &mut NamedParams,
    opt: &mut AdamW,
    cfg: &OptimConfig,
    start: u64,
    total: u64,
    mut loss: impl FnMut(u64, &NamedParams) -> Result<StepLoss>,
    hooks: &mut dyn FitHooks,
) -> Result<(u64, Option<Stopped>)> {
    let mut step = start;
    while step < total {
        if let Some(why) = hooks.before(step) {
            return Ok((step, Some(why)));
        }
        let l = loss(step, params)?;
        let done = step + 1;
        let non_finite = |value: f64| Error::NonFinite {
            step: done,
            value,
            checkpoint: hooks.last_checkpoint(),
        };
        if !l.loss.is_finite() {
            return Err(non_finite(l.loss));
        }
        if !l.report.is_finite() {
            return Err(non_finite(l.report));
        }
        let lr = cfg.lr_at(step, total);
        let norm = opt.step(cfg, lr, params, &l.grads);
        if !norm.is_finite() {
            return Err(non_finite(norm));
        }
        step = done;
        hooks.after(
            &StepDone {
                step,
                loss: l.loss,
                report: l.report,
                grad_norm: norm,
                lr,
                examples: l.examples,
            },
            params,
            opt,
        )?;
    }
    Ok((step, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamValue;

    fn quadratic(params: &NamedParams) -> StepLoss {
        // ½ (w − 3)²: gradient w − 3.
        let w = params["w"].data[0] as f64;
        let mut grads = NamedParams::new();
        grads.insert(
            "w".into(),
            ParamValue {
                shape: vec![1],
                data: vec![(w - 3.0) as f32],
            },
        );
        StepLoss {
            loss: 0.5 * (w - 3.0).powi(2),
            report: 0.0,
            grads,
            examples: 1,
        }
    }

    #[test]
    fn the_loop_minimises_stops_when_asked_and_names_a_non_finite_step() {
        let mut p = NamedParams::new();
        p.insert(
            "w".into(),
            ParamValue {
                shape: vec![1],
                data: vec![0.0],
            },
        );
        let cfg = OptimConfig {
            lr: 0.1,
            warmup_steps: 0,
            ema_decay: 0.0,
            ..OptimConfig::default()
        };
        let mut opt = AdamW::new(&p);
        let (done, why) = fit(
            &mut p,
            &mut opt,
            &cfg,
            0,
            500,
            |_, p| Ok(quadratic(p)),
            &mut (),
        )
        .unwrap();
        assert_eq!((done, why), (500, None));
        assert!((p["w"].data[0] - 3.0).abs() < 0.05, "{:?}", p["w"].data);
        // A hook that stops before step 7.
        struct StopAt(u64);
        impl FitHooks for StopAt {
            fn before(&mut self, done: u64) -> Option<Stopped> {
                (done == self.0).then_some(Stopped::Interrupted)
            }
            fn last_checkpoint(&self) -> u64 {
                4
            }
        }
        let (done, why) = fit(
            &mut p,
            &mut opt,
            &cfg,
            0,
            500,
            |_, p| Ok(quadratic(p)),
            &mut StopAt(7),
        )
        .unwrap();
        assert_eq!((done, why), (7, Some(Stopped::Interrupted)));
        // A NaN loss at the third step is named, with the hook's checkpoint.
        let e = fit(
            &mut p,
            &mut opt,
            &cfg,
            0,
            500,
            |s, p| {
                let mut l = quadratic(p);
                if s == 2 {
                    l.loss = f64::NAN;
                }
                Ok(l)
            },
            &mut StopAt(100),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                Error::NonFinite {
                    step: 3,
                    checkpoint: 4,
                    ..
                }
            ),
            "{e}"
        );
    }
}
