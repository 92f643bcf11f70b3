//! Noise-level features for denoisers: sinusoidal embeddings of a normalised log-SNR.

use burn::tensor::{Device, Tensor, TensorData};

/// Sinusoidal features of `u` (≈ [0, 1], the normalised γ), as VDM embeds 1000·u:
/// `[sin(1000 u f_k), cos(1000 u f_k)]` with f_k = 10000^{−k/(half−1)}.
///
/// # Shapes
/// `u`: `[B]` → `[B, dim]` (dim even, ≥ 4).
pub fn sinusoidal(u: Tensor<1>, dim: usize) -> Tensor<2> {
    let half = (dim / 2).max(2);
    let device = u.device();
    let freqs: Vec<f32> = (0..half)
        .map(|k| (-(10_000f64.ln()) * k as f64 / (half - 1) as f64).exp() as f32)
        .collect();
    let f = Tensor::<2>::from_data(TensorData::new(freqs, [1, half]), &device);
    let arg = u.unsqueeze_dim::<2>(1) * 1000.0 * f; // [B, half]
    Tensor::cat(vec![arg.clone().sin(), arg.cos()], 1)
}

/// One-hot rows of class labels over `classes` + 1 columns, the last being the null class (what a
/// missing label, or one that is not below `classes`, reads as).
///
/// # Shapes
/// `labels`: B labels (or none: `rows` null rows) → `[B, classes + 1]`.
pub fn one_hot(labels: Option<&[u32]>, rows: usize, classes: usize, device: &Device) -> Tensor<2> {
    let k = classes + 1;
    let mut v = vec![0f32; rows * k];
    for r in 0..rows {
        let y = labels
            .and_then(|l| l.get(r))
            .map_or(classes, |&y| (y as usize).min(classes));
        v[r * k + y] = 1.0;
    }
    Tensor::from_data(TensorData::new(v, [rows, k]), device)
}
