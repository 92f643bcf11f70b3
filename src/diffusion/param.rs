//! What the network predicts, and exact conversions among the four choices (MATH.md M18–M21), in
//! VDM notation: z_t = α x + σ ε for any process (variance preserving, α² + σ² = 1, with α = √ᾱ and
//! σ = √(1 − ᾱ) in DDPM notation; or exploding, α = 1). Nothing here assumes α² + σ² = 1.
//!
//! | code | math |
//! | --- | --- |
//! | `x0_hat` | x̂_θ(z_t), the data estimate (M18) |
//! | `eps_hat` | ε̂_θ, the noise estimate (M19) |
//! | `score_hat` | ŝ_θ ≈ ∇ log p(z_t) = −ε/σ (M20, Tweedie) |
//! | `v_hat` | v̂ ≈ α ε − σ x (M21) |
//! | `u_hat` | û ≈ ε − x, the straight path's velocity (M48) |
//! | `f_hat` | F of EDM's D = c_skip x̄ + c_out F (M47) |
//!
//! `alpha`, `sigma` are `[B, 1]` columns that broadcast over the `[B, D]` tensors.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The network's output kind. The ELBO is the same quantity whichever is chosen: the output is
/// converted to ε̂ exactly before the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Prediction {
    /// ε̂ (DDPM's choice).
    #[default]
    Eps,
    /// x̂_0.
    X0,
    /// The score ŝ.
    Score,
    /// v̂ (Salimans & Ho 2022).
    V,
    /// The velocity û = ε − x of the straight path (flow matching, M48): dz/dt of
    /// z_t = (1 − t) x + t ε, and the same quantity for any process.
    Flow,
    /// F of EDM's preconditioned denoiser D = c_skip x̄ + c_out F (Karras et al. 2022, M47).
    Edm,
}

crate::choice!(Prediction {
    Eps = "eps": "ε̂ (DDPM's choice)",
    X0 = "x0": "x̂_0",
    Score = "score": "the score ŝ",
    V = "v": "v̂ (Salimans & Ho 2022)",
    Flow = "flow": "the velocity ε − x of the straight path (flow matching)",
    Edm = "edm": "F of EDM's preconditioned denoiser D = c_skip x̄ + c_out F (Karras et al. 2022)",
});

/// EDM's σ_data, the data's standard deviation its preconditioning assumes (½ for data in
/// [−1, 1]; standardised vectors have 1, which the network absorbs).
pub const EDM_SIGMA_DATA: f64 = 0.5;

/// (M47) ε̂ from EDM's F. In x̄ = z/α and σ̄ = σ/α (any process), D = c_skip x̄ + c_out F with
/// c_skip = σ_d²/(σ̄² + σ_d²), c_out = σ̄ σ_d/√(σ̄² + σ_d²); ε̂ = (x̄ − D)/σ̄ then reads
/// (x̄ σ̄ − σ_d √(σ̄² + σ_d²) F)/(σ̄² + σ_d²), with no division by σ̄ (ε̂ → −F as σ̄ → 0).
pub fn eps_from_edm(
    z: Tensor<2>,
    f_hat: Tensor<2>,
    alpha: Tensor<2>,
    sigma: Tensor<2>,
) -> Tensor<2> {
    let sb = sigma / alpha.clone();
    let d2 = sb.clone().square() + EDM_SIGMA_DATA * EDM_SIGMA_DATA;
    (z / alpha * sb - f_hat * d2.clone().sqrt() * EDM_SIGMA_DATA) / d2
}

/// (M47) EDM's F from ε̂: F = (x̄ σ̄ − ε̂ (σ̄² + σ_d²))/(σ_d √(σ̄² + σ_d²)).
pub fn edm_from_eps(
    z: Tensor<2>,
    eps_hat: Tensor<2>,
    alpha: Tensor<2>,
    sigma: Tensor<2>,
) -> Tensor<2> {
    let sb = sigma / alpha.clone();
    let d2 = sb.clone().square() + EDM_SIGMA_DATA * EDM_SIGMA_DATA;
    (z / alpha * sb - eps_hat * d2.clone()) / (d2.sqrt() * EDM_SIGMA_DATA)
}

/// (M48) ε̂ from the velocity û = ε − x: z + α û = (α + σ) ε, so ε = (z + α û)/(α + σ).
pub fn eps_from_flow(
    z: Tensor<2>,
    u_hat: Tensor<2>,
    alpha: Tensor<2>,
    sigma: Tensor<2>,
) -> Tensor<2> {
    (z + u_hat * alpha.clone()) / (alpha + sigma)
}

/// (M48) û from ε̂ and z: û = ε − x̂_0 with x̂_0 = (z − σ ε)/α, = ((α + σ) ε − z)/α.
pub fn flow_from_eps(
    z: Tensor<2>,
    eps_hat: Tensor<2>,
    alpha: Tensor<2>,
    sigma: Tensor<2>,
) -> Tensor<2> {
    (eps_hat * (alpha.clone() + sigma) - z) / alpha
}

/// (M19) ε̂ from x̂_0: ε̂ = (z − α x̂_0)/σ.
pub fn eps_from_x0(
    z: Tensor<2>,
    x0_hat: Tensor<2>,
    alpha: Tensor<2>,
    sigma: Tensor<2>,
) -> Tensor<2> {
    (z - x0_hat * alpha) / sigma
}

/// (M19) x̂_0 from ε̂: x̂_0 = (z − σ ε̂)/α.
pub fn x0_from_eps(
    z: Tensor<2>,
    eps_hat: Tensor<2>,
    alpha: Tensor<2>,
    sigma: Tensor<2>,
) -> Tensor<2> {
    (z - eps_hat * sigma) / alpha
}

/// (M20) ε̂ from the score: ∇log p(z_t) = −ε/σ, so ε̂ = −σ ŝ.
pub fn eps_from_score(score_hat: Tensor<2>, sigma: Tensor<2>) -> Tensor<2> {
    -(score_hat * sigma)
}

/// (M20) ŝ from ε̂: ŝ = −ε̂/σ.
pub fn score_from_eps(eps_hat: Tensor<2>, sigma: Tensor<2>) -> Tensor<2> {
    -(eps_hat / sigma)
}

/// (M21) ε̂ from v̂ = α ε − σ x: α v + σ z = (α² + σ²) ε, so ε = (σ z + α v)/(α² + σ²).
pub fn eps_from_v(z: Tensor<2>, v_hat: Tensor<2>, alpha: Tensor<2>, sigma: Tensor<2>) -> Tensor<2> {
    let norm = alpha.clone().square() + sigma.clone().square();
    (z * sigma + v_hat * alpha) / norm
}

/// (M21) v̂ from ε̂ and z: v = α ε − σ x̂_0 with x̂_0 = (z − σ ε)/α (M19), = ((α² + σ²) ε − σ z)/α.
pub fn v_from_eps(
    z: Tensor<2>,
    eps_hat: Tensor<2>,
    alpha: Tensor<2>,
    sigma: Tensor<2>,
) -> Tensor<2> {
    let norm = alpha.clone().square() + sigma.clone().square();
    (eps_hat * norm - z * sigma) / alpha
}

impl Prediction {
    /// The network's raw output as ε̂.
    pub fn to_eps(
        self,
        out: Tensor<2>,
        z: Tensor<2>,
        alpha: Tensor<2>,
        sigma: Tensor<2>,
    ) -> Tensor<2> {
        match self {
            Prediction::Eps => out,
            Prediction::X0 => eps_from_x0(z, out, alpha, sigma),
            Prediction::Score => eps_from_score(out, sigma),
            Prediction::V => eps_from_v(z, out, alpha, sigma),
            Prediction::Flow => eps_from_flow(z, out, alpha, sigma),
            Prediction::Edm => eps_from_edm(z, out, alpha, sigma),
        }
    }

    /// ε̂ expressed as this kind of output (the inverse of `to_eps`).
    pub fn from_eps(
        self,
        eps_hat: Tensor<2>,
        z: Tensor<2>,
        alpha: Tensor<2>,
        sigma: Tensor<2>,
    ) -> Tensor<2> {
        match self {
            Prediction::Eps => eps_hat,
            Prediction::X0 => x0_from_eps(z, eps_hat, alpha, sigma),
            Prediction::Score => score_from_eps(eps_hat, sigma),
            Prediction::V => v_from_eps(z, eps_hat, alpha, sigma),
            Prediction::Flow => flow_from_eps(z, eps_hat, alpha, sigma),
            Prediction::Edm => edm_from_eps(z, eps_hat, alpha, sigma),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn t(v: Vec<f32>, s: [usize; 2]) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v, s), &Device::flex())
    }

    fn max_abs(a: Tensor<2>, b: Tensor<2>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    #[test]
    fn m18_to_m21_m46_m47_agree_with_the_truth_in_every_process() {
        // Known x, ε at three noise levels under each process: every kind of output computed
        // from its definition (not from the code's conversions) converts to the true ε, and
        // back to the truth.
        for process in [
            crate::diffusion::Process::VariancePreserving,
            crate::diffusion::Process::VarianceExploding,
            crate::diffusion::Process::Linear,
        ] {
            check_truth(process);
        }
    }

    fn check_truth(process: crate::diffusion::Process) {
        let x = t(vec![0.5, -1.0, 0.25, 0.9, -0.3, 0.0], [3, 2]);
        let eps = t(vec![1.2, 0.3, -0.7, -2.0, 0.4, 1.0], [3, 2]);
        let gammas = [-6.9f64, 0.0, 4.6];
        let col = |f: &dyn Fn(f64) -> f64| t(gammas.iter().map(|&g| f(g) as f32).collect(), [3, 1]);
        let alpha = col(&|g| process.alpha_sigma_f64(g).0);
        let sigma = col(&|g| process.alpha_sigma_f64(g).1);
        let z = x.clone() * alpha.clone() + eps.clone() * sigma.clone();
        // EDM's F from its definition D = c_skip x̄ + c_out F with D = x.
        let sd = EDM_SIGMA_DATA;
        let sb = col(&|g| {
            let (a, s) = process.alpha_sigma_f64(g);
            s / a
        });
        let c_skip = (sb.clone().square() + sd * sd).recip() * (sd * sd);
        let c_out = sb.clone() * sd / (sb.clone().square() + sd * sd).sqrt();
        let f_true = (x.clone() - z.clone() / alpha.clone() * c_skip) / c_out;
        let truth = |p: Prediction| match p {
            Prediction::Eps => eps.clone(),
            Prediction::X0 => x.clone(),
            Prediction::Score => -(eps.clone() / sigma.clone()),
            Prediction::V => eps.clone() * alpha.clone() - x.clone() * sigma.clone(),
            Prediction::Flow => eps.clone() - x.clone(),
            Prediction::Edm => f_true.clone(),
        };
        for &p in <Prediction as crate::choice::Choice>::ALL {
            let e = p.to_eps(truth(p), z.clone(), alpha.clone(), sigma.clone());
            assert!(
                max_abs(e.clone(), eps.clone()) < 2e-4,
                "{p:?} → ε ({process:?})"
            );
            let back = p.from_eps(eps.clone(), z.clone(), alpha.clone(), sigma.clone());
            let scale: f32 = truth(p).abs().max().into_scalar();
            assert!(
                max_abs(back, truth(p)) < 2e-3 * (1.0 + scale),
                "ε → {p:?} ({process:?})"
            );
        }
        // x̂_0 ↔ ε̂ directly.
        let x_back = x0_from_eps(z.clone(), eps.clone(), alpha.clone(), sigma.clone());
        assert!(max_abs(x_back, x.clone()) < 2e-3);
    }
}
