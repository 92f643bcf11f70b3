//! The linear-Gaussian latent model (probabilistic PCA), MATH.md M5: the ground truth for M1–M4.
//!
//! p(z) = N(0, I_d), p(x|z) = N(W z + b, s² I_D);
//! p(x) = N(b, W Wᵀ + s² I) exactly; p(z|x) = N(M⁻¹ Wᵀ (x − b), s² M⁻¹), M = Wᵀ W + s² I_d.
//! Everything here is f64 and closed form.

use super::gaussian::LOG_2PI;

/// A dense row-major matrix, just enough linear algebra for M5.
#[derive(Debug, Clone, PartialEq)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub a: Vec<f64>,
}

impl Mat {
    pub fn new(rows: usize, cols: usize, a: Vec<f64>) -> Self {
        assert_eq!(
            a.len(),
            rows * cols,
            "Mat::new: {rows}x{cols} needs {} values",
            rows * cols
        );
        Mat { rows, cols, a }
    }
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.a[i * self.cols + j]
    }
    pub fn transpose(&self) -> Mat {
        let mut a = vec![0.0; self.a.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                a[j * self.rows + i] = self.at(i, j);
            }
        }
        Mat::new(self.cols, self.rows, a)
    }
    pub fn matmul(&self, o: &Mat) -> Mat {
        assert_eq!(self.cols, o.rows);
        let mut a = vec![0.0; self.rows * o.cols];
        for i in 0..self.rows {
            for k in 0..self.cols {
                let v = self.at(i, k);
                for j in 0..o.cols {
                    a[i * o.cols + j] += v * o.at(k, j);
                }
            }
        }
        Mat::new(self.rows, o.cols, a)
    }
    pub fn matvec(&self, v: &[f64]) -> Vec<f64> {
        (0..self.rows)
            .map(|i| (0..self.cols).map(|j| self.at(i, j) * v[j]).sum())
            .collect()
    }
    pub fn add_diag(mut self, c: f64) -> Mat {
        for i in 0..self.rows.min(self.cols) {
            self.a[i * self.cols + i] += c;
        }
        self
    }
    /// Lower-triangular L with L Lᵀ = self (self symmetric positive definite).
    pub fn cholesky(&self) -> Mat {
        let n = self.rows;
        let mut l = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let mut s = self.at(i, j);
                for k in 0..j {
                    s -= l[i * n + k] * l[j * n + k];
                }
                l[i * n + j] = if i == j { s.sqrt() } else { s / l[j * n + j] };
            }
        }
        Mat::new(n, n, l)
    }
    /// Solve self · x = b for symmetric positive definite self.
    pub fn solve_spd(&self, b: &[f64]) -> Vec<f64> {
        let l = self.cholesky();
        let n = self.rows;
        let mut y = vec![0.0; n];
        for i in 0..n {
            y[i] = (b[i] - (0..i).map(|k| l.at(i, k) * y[k]).sum::<f64>()) / l.at(i, i);
        }
        let mut x = vec![0.0; n];
        for i in (0..n).rev() {
            x[i] = (y[i] - (i + 1..n).map(|k| l.at(k, i) * x[k]).sum::<f64>()) / l.at(i, i);
        }
        x
    }
    /// Inverse of a symmetric positive definite matrix.
    pub fn inverse_spd(&self) -> Mat {
        let n = self.rows;
        let mut a = vec![0.0; n * n];
        for j in 0..n {
            let mut e = vec![0.0; n];
            e[j] = 1.0;
            for (i, v) in self.solve_spd(&e).into_iter().enumerate() {
                a[i * n + j] = v;
            }
        }
        Mat::new(n, n, a)
    }
    /// log det of a symmetric positive definite matrix.
    pub fn logdet_spd(&self) -> f64 {
        let l = self.cholesky();
        2.0 * (0..self.rows).map(|i| l.at(i, i).ln()).sum::<f64>()
    }
}

/// log N(x; m, C) for a full covariance C.
pub fn mvn_log_density(x: &[f64], m: &[f64], c: &Mat) -> f64 {
    let d: Vec<f64> = x.iter().zip(m).map(|(a, b)| a - b).collect();
    let sol = c.solve_spd(&d);
    let quad: f64 = d.iter().zip(&sol).map(|(a, b)| a * b).sum();
    -0.5 * (x.len() as f64 * LOG_2PI + c.logdet_spd() + quad)
}

/// (M5) p(z) = N(0, I_d), p(x|z) = N(W z + b, s² I_D), with W of shape D × d.
#[derive(Debug, Clone)]
pub struct LinearGaussian {
    pub w: Mat,
    pub b: Vec<f64>,
    pub s2: f64,
}

impl LinearGaussian {
    pub fn data_dim(&self) -> usize {
        self.w.rows
    }
    pub fn latent_dim(&self) -> usize {
        self.w.cols
    }
    /// (M5) log p(x) = log N(x; b, W Wᵀ + s² I), exactly.
    pub fn log_evidence(&self, x: &[f64]) -> f64 {
        let c = self.w.matmul(&self.w.transpose()).add_diag(self.s2);
        mvn_log_density(x, &self.b, &c)
    }
    /// (M5) the exact posterior p(z|x) = N(M⁻¹ Wᵀ (x − b), s² M⁻¹): (mean, covariance).
    pub fn posterior(&self, x: &[f64]) -> (Vec<f64>, Mat) {
        let wt = self.w.transpose();
        let m = wt.matmul(&self.w).add_diag(self.s2);
        let xc: Vec<f64> = x.iter().zip(&self.b).map(|(a, b)| a - b).collect();
        let mean = m.solve_spd(&wt.matvec(&xc));
        let mut cov = m.inverse_spd();
        cov.a.iter_mut().for_each(|v| *v *= self.s2);
        (mean, cov)
    }
    /// log p(x, z) = log p(z) + log p(x|z).
    pub fn log_joint(&self, x: &[f64], z: &[f64]) -> f64 {
        let d = self.latent_dim() as f64;
        let lpz = -0.5 * (d * LOG_2PI + z.iter().map(|v| v * v).sum::<f64>());
        let mean: Vec<f64> = self
            .w
            .matvec(z)
            .iter()
            .zip(&self.b)
            .map(|(a, b)| a + b)
            .collect();
        let sq: f64 = x.iter().zip(&mean).map(|(a, m)| (a - m) * (a - m)).sum();
        let dd = x.len() as f64;
        lpz - 0.5 * (dd * (LOG_2PI + self.s2.ln()) + sq / self.s2)
    }
}

/// KL( N(m1, diag v1) ‖ N(m2, C2) ) for a diagonal first and full second covariance.
pub fn kl_diag_to_full(m1: &[f64], v1: &[f64], m2: &[f64], c2: &Mat) -> f64 {
    let k = m1.len() as f64;
    let inv = c2.inverse_spd();
    let tr: f64 = (0..m1.len()).map(|i| inv.at(i, i) * v1[i]).sum();
    let d: Vec<f64> = m2.iter().zip(m1).map(|(a, b)| a - b).collect();
    let quad: f64 = d.iter().zip(inv.matvec(&d)).map(|(a, b)| a * b).sum();
    let logdet1: f64 = v1.iter().map(|v| v.ln()).sum();
    0.5 * (tr + quad - k + c2.logdet_spd() - logdet1)
}

// The ELBO of a Gaussian encoder on the linear-Gaussian model, in closed form (M2, M3, M5).

/// −½ (d log 2π + log det S + d): E_q[log q] for q = N(m, S).
pub fn neg_entropy(cov: &Mat) -> f64 {
    let d = cov.rows as f64;
    -0.5 * (d * LOG_2PI + cov.logdet_spd() + d)
}

pub fn trace(m: &Mat) -> f64 {
    (0..m.rows).map(|i| m.at(i, i)).sum()
}

/// (M2) in closed form for q = N(m, S) under M5: E_q[log p(z)] + E_q[log p(x | z)] − E_q[log q].
/// E_q[log p(z)] = −½ (d log 2π + mᵀm + tr S);
/// E_q[log p(x | z)] = −½ (D log 2π s² + (‖x − W m − b‖² + tr(W S Wᵀ))/s²).
pub fn elbo_closed_form(lg: &LinearGaussian, x: &[f64], mean: &[f64], cov: &Mat) -> f64 {
    let d = lg.latent_dim() as f64;
    let dd = x.len() as f64;
    let prior = -0.5 * (d * LOG_2PI + mean.iter().map(|v| v * v).sum::<f64>() + trace(cov));
    let wm = lg.w.matvec(mean);
    let resid: f64 = x
        .iter()
        .zip(&wm)
        .zip(&lg.b)
        .map(|((x, a), b)| (x - a - b).powi(2))
        .sum();
    let wswt = lg.w.matmul(cov).matmul(&lg.w.transpose());
    let lik = -0.5 * (dd * (LOG_2PI + lg.s2.ln()) + (resid + trace(&wswt)) / lg.s2);
    prior + lik - neg_entropy(cov)
}

/// KL(N(m, S) ‖ N(μ, P)) = ½ (tr(P⁻¹ S) + (μ − m)ᵀ P⁻¹ (μ − m) − d + log det P − log det S).
pub fn kl_gaussians(m: &[f64], s: &Mat, mu: &[f64], p: &Mat) -> f64 {
    let pinv = p.inverse_spd();
    let diff: Vec<f64> = mu.iter().zip(m).map(|(a, b)| a - b).collect();
    let quad: f64 = diff
        .iter()
        .zip(pinv.matvec(&diff))
        .map(|(a, b)| a * b)
        .sum();
    0.5 * (trace(&pinv.matmul(s)) + quad - m.len() as f64 + p.logdet_spd() - s.logdet_spd())
}

/// (M1) log ∫ p(x | z) p(z) dz on a regular grid over [−L, L]^d (d = 1 or 2), by log-sum-exp of
/// log p(x, z) + log(cell volume): the integrand is a Gaussian in z, so a grid of a few hundred
/// points per axis over ±12 posterior widths around 0 reaches double precision.
pub fn quadrature(lg: &LinearGaussian, x: &[f64], per_axis: usize) -> (f64, usize) {
    let d = lg.latent_dim();
    let (mean, cov) = lg.posterior(x);
    // Half-width: wide enough to hold the posterior (12 sd from its mean) and the origin.
    let half = (0..d)
        .map(|i| mean[i].abs() + 12.0 * cov.at(i, i).sqrt())
        .fold(0.0f64, f64::max);
    let h = 2.0 * half / (per_axis - 1) as f64;
    let axis: Vec<f64> = (0..per_axis).map(|i| -half + i as f64 * h).collect();
    let mut terms = Vec::new();
    match d {
        1 => {
            for &z in &axis {
                terms.push(lg.log_joint(x, &[z]) + h.ln());
            }
        }
        2 => {
            for &z0 in &axis {
                for &z1 in &axis {
                    terms.push(lg.log_joint(x, &[z0, z1]) + 2.0 * h.ln());
                }
            }
        }
        _ => return (f64::NAN, 0),
    }
    (crate::data::toy::log_sum_exp(&terms), terms.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dimensional_evidence_by_hand() {
        // x = w z + b + noise: p(x) = N(b, w² + s²).
        let m = LinearGaussian {
            w: Mat::new(1, 1, vec![2.0]),
            b: vec![0.5],
            s2: 0.25,
        };
        let x = 1.3;
        let v = 4.0 + 0.25;
        let want = -0.5 * ((std::f64::consts::TAU * v).ln() + (x - 0.5f64).powi(2) / v);
        assert!((m.log_evidence(&[x]) - want).abs() < 1e-12);
        // Bayes: log p(z|x) = log p(x,z) − log p(x) at any z.
        let (mean, cov) = m.posterior(&[x]);
        let z = 0.1;
        let lq = -0.5
            * ((std::f64::consts::TAU * cov.at(0, 0)).ln() + (z - mean[0]).powi(2) / cov.at(0, 0));
        assert!((m.log_joint(&[x], &[z]) - m.log_evidence(&[x]) - lq).abs() < 1e-12);
    }

    #[test]
    fn cholesky_solves() {
        let a = Mat::new(2, 2, vec![4.0, 1.0, 1.0, 3.0]);
        let x = a.solve_spd(&[1.0, 2.0]);
        assert!((4.0 * x[0] + x[1] - 1.0).abs() < 1e-12 && (x[0] + 3.0 * x[1] - 2.0).abs() < 1e-12);
        assert!((a.logdet_spd() - 11f64.ln()).abs() < 1e-12);
    }
}
