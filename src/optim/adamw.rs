//! AdamW with warm-up, global-norm gradient clipping and an EMA of the weights, on named f32
//! parameters. One fused loop per parameter (no temporaries), exact to save and resume.

use serde::{Deserialize, Serialize};

use crate::params::NamedParams;
use crate::{Error, Result};

/// Optimiser settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate (1e-3 is Adam's usual default and works for the VAE and VDM here).
    pub lr: f64,
    /// Linear warm-up from 0 to `lr` over this many steps (avoids early Adam blow-ups).
    pub warmup_steps: u64,
    /// After warm-up: constant, or cosine decay to 10% of `lr` at the last step.
    pub schedule: LrSchedule,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (AdamW); 0 by default: the likelihood is the objective.
    pub weight_decay: f64,
    /// Clip the global gradient L2 norm to this (0 turns clipping off).
    pub grad_clip: f64,
    /// EMA decay of the weights used for evaluation and sampling (0 turns EMA off); the effective
    /// decay is min(ema_decay, (1 + t)/(10 + t)) so early averages are not stuck at the init.
    pub ema_decay: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 1e-3,
            warmup_steps: 200,
            schedule: LrSchedule::Constant,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            grad_clip: 100.0,
            ema_decay: 0.999,
        }
    }
}

/// Learning rate after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    Constant,
    Cosine,
}

impl OptimConfig {
    /// Learning rate at `step` (0-based) of `total`.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        let warm = if self.warmup_steps > 0 {
            ((step + 1) as f64 / self.warmup_steps as f64).min(1.0)
        } else {
            1.0
        };
        let decay = match self.schedule {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine => {
                let t = step.saturating_sub(self.warmup_steps) as f64;
                let n = total.saturating_sub(self.warmup_steps).max(1) as f64;
                0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * (t / n).min(1.0)).cos())
            }
        };
        self.lr * warm * decay
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("optim.lr must be a positive number");
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("optim.beta1 and optim.beta2 must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad("optim.ema_decay must be in [0, 1)");
        }
        if self.eps <= 0.0 || self.grad_clip < 0.0 || self.weight_decay < 0.0 {
            return bad("optim.eps must be positive, grad_clip and weight_decay non-negative");
        }
        Ok(())
    }
}

/// Optimiser state: step count, first and second moments, and the EMA weights.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    pub t: u64,
    pub m: NamedParams,
    pub v: NamedParams,
    pub ema: NamedParams,
}

impl AdamW {
    pub fn new(params: &NamedParams) -> Self {
        let zeros = |p: &NamedParams| {
            p.iter()
                .map(|(k, v)| {
                    let mut z = v.clone();
                    z.data.iter_mut().for_each(|x| *x = 0.0);
                    (k.clone(), z)
                })
                .collect()
        };
        AdamW {
            t: 0,
            m: zeros(params),
            v: zeros(params),
            ema: params.clone(),
        }
    }

    /// Global L2 norm of the gradients.
    pub fn grad_norm(grads: &NamedParams) -> f64 {
        grads
            .values()
            .flat_map(|g| g.data.iter())
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt()
    }

    /// One AdamW step on `params` in place; returns the gradient norm before clipping.
    pub fn step(
        &mut self,
        cfg: &OptimConfig,
        lr: f64,
        params: &mut NamedParams,
        grads: &NamedParams,
    ) -> f64 {
        let norm = Self::grad_norm(grads);
        let clip = if cfg.grad_clip > 0.0 && norm > cfg.grad_clip {
            (cfg.grad_clip / norm) as f32
        } else {
            1.0
        };
        self.t += 1;
        let t = self.t as i32;
        let (b1, b2) = (cfg.beta1 as f32, cfg.beta2 as f32);
        let bc1 = 1.0 - cfg.beta1.powi(t);
        let bc2 = 1.0 - cfg.beta2.powi(t);
        let step_size = (lr / bc1) as f32;
        let inv_sqrt_bc2 = (1.0 / bc2.sqrt()) as f32;
        let eps = cfg.eps as f32;
        let decay = (1.0 - lr * cfg.weight_decay) as f32;
        let ema_d = cfg
            .ema_decay
            .min((1.0 + self.t as f64) / (10.0 + self.t as f64)) as f32;
        for (name, p) in params.iter_mut() {
            let (Some(g), Some(m), Some(v)) =
                (grads.get(name), self.m.get_mut(name), self.v.get_mut(name))
            else {
                continue;
            };
            let ema = self.ema.get_mut(name);
            // Iterators over equal-length slices: no bounds checks, so the loop vectorises.
            for (((pi, &gi), mi), vi) in p
                .data
                .iter_mut()
                .zip(&g.data)
                .zip(m.data.iter_mut())
                .zip(v.data.iter_mut())
            {
                let gi = gi * clip;
                *mi = b1 * *mi + (1.0 - b1) * gi;
                *vi = b2 * *vi + (1.0 - b2) * gi * gi;
                *pi = *pi * decay - step_size * *mi / (vi.sqrt() * inv_sqrt_bc2 + eps);
            }
            if let Some(e) = ema {
                for (ei, &pi) in e.data.iter_mut().zip(&p.data) {
                    *ei = ema_d * *ei + (1.0 - ema_d) * pi;
                }
            }
        }
        norm
    }

    /// The weights to evaluate with: the EMA, or the raw weights when EMA is off.
    pub fn eval_weights<'a>(
        &'a self,
        cfg: &OptimConfig,
        params: &'a NamedParams,
    ) -> &'a NamedParams {
        if cfg.ema_decay > 0.0 {
            &self.ema
        } else {
            params
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamValue;

    fn one(v: f32) -> NamedParams {
        [(
            "w".to_string(),
            ParamValue {
                shape: vec![1],
                data: vec![v],
            },
        )]
        .into()
    }

    #[test]
    fn first_step_moves_by_lr_against_the_gradient_sign() {
        // Adam's first step is lr · g/|g| (bias-corrected), whatever |g|.
        let cfg = OptimConfig {
            warmup_steps: 0,
            ..Default::default()
        };
        let mut p = one(1.0);
        let mut opt = AdamW::new(&p);
        opt.step(&cfg, 0.1, &mut p, &one(5.0));
        assert!((p["w"].data[0] - 0.9).abs() < 1e-6);
    }

    #[test]
    fn minimises_a_quadratic_and_clips() {
        let cfg = OptimConfig {
            warmup_steps: 0,
            grad_clip: 1.0,
            ..Default::default()
        };
        let mut p = one(3.0);
        let mut opt = AdamW::new(&p);
        let mut first_norm = 0.0;
        for i in 0..2000 {
            let g = one(2.0 * p["w"].data[0]); // d/dw w²
            let n = opt.step(&cfg, 0.01, &mut p, &g);
            if i == 0 {
                first_norm = n;
            }
        }
        assert_eq!(first_norm, 6.0);
        assert!(p["w"].data[0].abs() < 1e-2, "{}", p["w"].data[0]);
        assert!(opt.ema["w"].data[0].abs() < 0.5);
    }

    #[test]
    fn warmup_and_cosine() {
        let cfg = OptimConfig {
            warmup_steps: 10,
            schedule: LrSchedule::Cosine,
            ..Default::default()
        };
        assert!((cfg.lr_at(0, 100) - 1e-4).abs() < 1e-12);
        assert!((cfg.lr_at(9, 100) - 1e-3).abs() < 1e-12);
        assert!((cfg.lr_at(100, 100) - 1e-4).abs() < 1e-12);
    }
}
