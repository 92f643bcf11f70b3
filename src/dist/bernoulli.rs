//! Bernoulli likelihood with logits (M9), computed stably at any logit.

use burn::tensor::Tensor;

/// softplus(l) = log(1 + e^l) = max(l, 0) + log(1 + e^{−|l|}): no overflow for any l. On the
/// CPU backend this is the project's kernel (`crate::kernels::softplus`: vectorised exp and log,
/// one-pass backward σ(l)); elsewhere Burn's composition of the same formula.
pub fn softplus<const D: usize>(l: Tensor<D>) -> Tensor<D> {
    crate::kernels::softplus(l)
}

/// (M9) log p(x | logits) = Σ_i [x_i l_i − softplus(l_i)] (= −BCE-with-logits), `[B, D]` → `[B]`.
pub fn bernoulli_log_prob(logits: Tensor<2>, x: Tensor<2>) -> Tensor<1> {
    (x * logits.clone() - softplus(logits))
        .sum_dim(1)
        .squeeze_dim(1)
}

/// The same for one value, in f64: the direct formula x log σ(l) + (1 − x) log(1 − σ(l)).
pub fn bernoulli_log_prob_scalar(l: f64, x: f64) -> f64 {
    let log_sig = -((-l).exp()).ln_1p(); // log σ(l) = −softplus(−l)
    let log_one_minus = -(l.exp()).ln_1p(); // log(1 − σ(l)) = −softplus(l)
    let a = if x > 0.0 { x * log_sig } else { 0.0 };
    let b = if x < 1.0 {
        (1.0 - x) * log_one_minus
    } else {
        0.0
    };
    a + b
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn stable_at_extreme_logits() {
        let ls = [-200.0f32, -30.0, -1.0, 0.0, 1.0, 30.0, 200.0];
        for &x in &[0.0f32, 1.0] {
            for &l in &ls {
                let d = Device::flex();
                let lt = Tensor::<2>::from_data(TensorData::new(vec![l], [1, 1]), &d);
                let xt = Tensor::<2>::from_data(TensorData::new(vec![x], [1, 1]), &d);
                let got: f32 = bernoulli_log_prob(lt, xt).into_scalar();
                let want = bernoulli_log_prob_scalar(l as f64, x as f64);
                assert!(got.is_finite(), "l={l} x={x}");
                assert!(
                    (got as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "l={l} x={x}: {got} vs {want}"
                );
            }
        }
        // Direct formula, away from saturation, against the log-space one.
        let s = 1.0 / (1.0 + (-0.7f64).exp());
        assert!((bernoulli_log_prob_scalar(0.7, 1.0) - s.ln()).abs() < 1e-12);
        assert!((bernoulli_log_prob_scalar(0.7, 0.0) - (1.0 - s).ln()).abs() < 1e-12);
        // At l = −200, x = 1: log σ(l) ≈ l exactly.
        assert!((bernoulli_log_prob_scalar(-200.0, 1.0) + 200.0).abs() < 1e-9);
    }
}
