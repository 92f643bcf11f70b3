//! The learned noise schedule (MATH.md M26): γ_η(t) = γ_0 + (γ_1 − γ_0)(γ̃(t) − γ̃(0))/(γ̃(1) − γ̃(0)),
//! with γ̃ monotone by construction, γ̃(t) = softplus(a) t + Σ_k softplus(c_k) sigmoid(softplus(w_k) t + b_k)
//! (a linear unit plus a layer of sigmoids with positive weights, as VDM), and learned endpoints
//! γ_0 and γ_1 = γ_0 + softplus(δ) > γ_0.

use burn::module::{Module, Param};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor, TensorData};

use crate::dist::softplus;

/// Learned γ(t).
#[derive(Module, Debug)]
pub struct LearnedSchedule {
    gamma0: Param<Tensor<1>>,
    delta: Param<Tensor<1>>,
    a: Param<Tensor<1>>,
    w: Param<Tensor<1>>,
    b: Param<Tensor<1>>,
    c: Param<Tensor<1>>,
}

/// softplus⁻¹(y) = log(e^y − 1).
fn inv_softplus(y: f64) -> f64 {
    y + (-(-y).exp_m1()).ln()
}

impl LearnedSchedule {
    /// Starts (almost) linear from `gamma_min` to `gamma_max`, with `k` sigmoid units.
    pub fn new(gamma_min: f64, gamma_max: f64, k: usize, device: &Device) -> Self {
        let k = k.max(1);
        let p = |v: Vec<f32>| {
            Param::from_tensor(Tensor::<1>::from_data(
                TensorData::new(v.clone(), [v.len()]),
                device,
            ))
        };
        // Sigmoid centres spread over [0, 1] with slope 10, small heights: γ̃ starts ≈ linear.
        let w = inv_softplus(10.0) as f32;
        LearnedSchedule {
            gamma0: p(vec![gamma_min as f32]),
            delta: p(vec![inv_softplus(gamma_max - gamma_min) as f32]),
            a: p(vec![inv_softplus(1.0) as f32]),
            w: p(vec![w; k]),
            b: p((0..k)
                .map(|i| -10.0 * (i as f32 + 0.5) / k as f32)
                .collect()),
            c: p(vec![inv_softplus(0.01) as f32; k]),
        }
    }

    /// γ̃(t) and dγ̃/dt for `t` `[N]` → (`[N]`, `[N]`).
    fn tilde(&self, t: Tensor<1>) -> (Tensor<1>, Tensor<1>) {
        let a = softplus(self.a.val()); // [1]
        let w = softplus(self.w.val()).unsqueeze_dim::<2>(0); // [1, K]
        let c = softplus(self.c.val()).unsqueeze_dim::<2>(0); // [1, K]
        let b = self.b.val().unsqueeze_dim::<2>(0); // [1, K]
        let tc = t.clone().unsqueeze_dim::<2>(1); // [N, 1]
        let s = sigmoid(tc * w.clone() + b); // [N, K]
        let g = t * a.clone() + (s.clone() * c.clone()).sum_dim(1).squeeze_dim::<1>(1);
        let ds = (s.clone() * (-s + 1.0) * w * c)
            .sum_dim(1)
            .squeeze_dim::<1>(1);
        (g, ds + a)
    }

    /// γ(t) and γ'(t) for `t` `[N]`.
    pub fn gamma(&self, t: Tensor<1>) -> (Tensor<1>, Tensor<1>) {
        let device = t.device();
        let ends = Tensor::<1>::from_data(TensorData::new(vec![0.0f32, 1.0], [2]), &device);
        let (ge, _) = self.tilde(ends);
        let g0 = ge.clone().narrow(0, 0, 1);
        let g1 = ge.narrow(0, 1, 1);
        let span = g1 - g0.clone();
        let (gt, dgt) = self.tilde(t);
        let range = softplus(self.delta.val());
        let gamma = self.gamma0.val() + range.clone() * (gt - g0) / span.clone();
        let dgamma = range * dgt / span;
        (gamma, dgamma)
    }

    /// γ(0) and γ(1), `[1]` each.
    pub fn endpoints(&self) -> (Tensor<1>, Tensor<1>) {
        let g0 = self.gamma0.val();
        (g0.clone(), g0 + softplus(self.delta.val()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_near_linear_and_is_monotone_with_right_derivative() {
        let d = Device::flex();
        let s = LearnedSchedule::new(-13.3, 5.0, 16, &d);
        let ts: Vec<f32> = (0..=100).map(|i| i as f32 / 100.0).collect();
        let (g, dg) = s.gamma(Tensor::from_data(TensorData::new(ts.clone(), [101]), &d));
        let g: Vec<f32> = g.into_data().try_to_vec().unwrap();
        let dg: Vec<f32> = dg.into_data().try_to_vec().unwrap();
        assert!(
            (g[0] + 13.3).abs() < 1e-3 && (g[100] - 5.0).abs() < 1e-3,
            "{} {}",
            g[0],
            g[100]
        );
        for i in 1..=100 {
            assert!(g[i] > g[i - 1]);
            assert!(
                (g[i] - (-13.3 + 18.3 * ts[i])).abs() < 0.5,
                "not near linear at {i}: {}",
                g[i]
            );
        }
        // γ' against a central difference of γ.
        for i in 1..100 {
            let fd = (g[i + 1] - g[i - 1]) / 0.02;
            assert!(
                (fd - dg[i]).abs() < 0.02 * dg[i].abs() + 0.05,
                "at {i}: {fd} vs {}",
                dg[i]
            );
        }
    }
}
