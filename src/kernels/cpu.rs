//! The arithmetic of the project's CPU kernels on plain f32 slices: a vectorisable exp, SiLU
//! and fused GroupNorm + shift + SiLU, forward and backward. Compiled twice on x86-64 (generic,
//! and with AVX2 + FMA chosen at run time), parallel over independent blocks with rayon; the
//! result of every element is computed by the same arithmetic whatever the thread count.

use rayon::prelude::*;

use super::direct;

/// Elements per parallel task of an elementwise kernel.
const CHUNK: usize = 16 * 1024;

/// e^x in f32, branch-free so that loops over it vectorise: x = k ln 2 + r with |r| ≤ ½ ln 2,
/// e^r by its degree-6 Taylor polynomial (relative error below 2e-7 on that range), 2^k from the
/// exponent bits. Inputs are clamped to [−87, 88] (results 1.6e-38 … 1.65e38: no overflow to
/// ∞, no denormals); NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Round-to-nearest by adding and subtracting 1.5 · 2^23.
    const MAGIC: f32 = 12_582_912.0;
    let xc = if x > 88.0 { 88.0 } else { x };
    let xc = if xc < -87.0 { -87.0 } else { xc };
    let k = (xc * LOG2E + MAGIC) - MAGIC;
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits((((k as i32) + 127) as u32) << 23);
    let y = p * scale;
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// σ(x) = 1 / (1 + e^{−x}).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// log(1 + t) for t ∈ [0, 1], branch-free: with s = t/(2 + t) ∈ [0, 1/3], log(1 + t) =
/// 2 atanh(s) = 2 (s + s³/3 + … + s¹³/13); the first omitted term is below 2e-8 relative.
#[inline(always)]
fn ln_1p_unit(t: f32) -> f32 {
    let s = t / (2.0 + t);
    let s2 = s * s;
    let p = 1.0
        + s2 * (1.0 / 3.0
            + s2 * (1.0 / 5.0
                + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0 + s2 * (1.0 / 13.0))))));
    2.0 * s * p
}

/// softplus(x) = max(x, 0) + log(1 + e^{−|x|}): finite for every finite x.
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    x.max(0.0) + ln_1p_unit(exp(-x.abs()))
}

/// Runs `body` compiled with AVX2 and FMA where the CPU has them, else the generic build.
macro_rules! simd_dispatch {
    ($name:ident, $generic:ident, ($($arg:ident : $ty:ty),*)) => {
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) {
                    $generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features the function was compiled for.
                    unsafe { avx2($($arg),*) };
                    return;
                }
            }
            $generic($($arg),*)
        }
    };
}

#[inline(always)]
fn silu_fwd_block(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v * sigmoid(v);
    }
}
simd_dispatch!(silu_fwd_simd, silu_fwd_block, (x: &[f32], y: &mut [f32]));

#[inline(always)]
fn silu_bwd_block(x: &[f32], g: &[f32], out: &mut [f32]) {
    for ((o, &v), &gv) in out.iter_mut().zip(x).zip(g) {
        let s = sigmoid(v);
        *o = gv * s * (1.0 + v * (1.0 - s));
    }
}
simd_dispatch!(silu_bwd_simd, silu_bwd_block, (x: &[f32], g: &[f32], out: &mut [f32]));

#[inline(always)]
fn softplus_fwd_block(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = softplus(v);
    }
}
simd_dispatch!(softplus_fwd_simd, softplus_fwd_block, (x: &[f32], y: &mut [f32]));

#[inline(always)]
fn softplus_bwd_block(x: &[f32], g: &[f32], out: &mut [f32]) {
    for ((o, &v), &gv) in out.iter_mut().zip(x).zip(g) {
        *o = gv * sigmoid(v);
    }
}
simd_dispatch!(softplus_bwd_simd, softplus_bwd_block, (x: &[f32], g: &[f32], out: &mut [f32]));

/// y = f(x) elementwise by `kernel` (one block of the slices at a time), in parallel blocks.
fn elementwise(x: &[f32], kernel: fn(&[f32], &mut [f32])) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| kernel(x, y));
    y
}

/// dL/dx = g f'(x) elementwise by `kernel` (x, g, out), in parallel blocks.
fn elementwise_grad(x: &[f32], g: &[f32], kernel: fn(&[f32], &[f32], &mut [f32])) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
        .for_each(|(o, (x, g))| kernel(x, g, o));
    out
}

/// y = softplus(x).
pub fn softplus_forward(x: &[f32]) -> Vec<f32> {
    elementwise(x, softplus_fwd_simd)
}

/// dL/dx = g σ(x).
pub fn softplus_backward(x: &[f32], g: &[f32]) -> Vec<f32> {
    elementwise_grad(x, g, softplus_bwd_simd)
}

/// y = x σ(x).
pub fn silu_forward(x: &[f32]) -> Vec<f32> {
    elementwise(x, silu_fwd_simd)
}

/// dL/dx = g σ(x) (1 + x (1 − σ(x))).
pub fn silu_backward(x: &[f32], g: &[f32]) -> Vec<f32> {
    elementwise_grad(x, g, silu_bwd_simd)
}

/// Shapes of a fused GroupNorm: batch, channels, values per channel, groups.
#[derive(Debug, Clone, Copy)]
pub struct GnShape {
    pub b: usize,
    pub c: usize,
    pub hw: usize,
    pub groups: usize,
    pub eps: f32,
}

impl GnShape {
    fn cpg(&self) -> usize {
        self.c / self.groups
    }
}

/// Lanes of the reductions below: 16 independent partial sums, so that the loops vectorise (a
/// single running sum is a chain of dependent adds that LLVM may not reorder).
const L: usize = 16;

/// Σ v_i.
#[inline(always)]
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; L];
    let chunks = v.chunks_exact(L);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += *x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ (v_i + off)².
#[inline(always)]
fn sum_sq_off(v: &[f32], off: f32) -> f32 {
    let mut acc = [0.0f32; L];
    let chunks = v.chunks_exact(L);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|x| (x + off) * (x + off))
        .sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += (*x + off) * (*x + off);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ a_i b_i.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; L];
    let ca = a.chunks_exact(L);
    let cb = b.chunks_exact(L);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((s, p), q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Mean and 1/√(var + ε) of one group's values v_i = x_i + shift_c, two passes, per channel
/// in f32 lanes and across channels in f64.
#[inline(always)]
fn group_stats(x: &[f32], shift: &[f32], hw: usize, eps: f32) -> (f32, f32) {
    let n = x.len() as f64;
    let mut total = 0.0f64;
    for (c, chan) in x.chunks_exact(hw).enumerate() {
        total += sum(chan) as f64 + shift[c] as f64 * hw as f64;
    }
    let mean = (total / n) as f32;
    let mut ss = 0.0f64;
    for (c, chan) in x.chunks_exact(hw).enumerate() {
        let off = shift[c] - mean;
        ss += sum_sq_off(chan, off) as f64;
    }
    let var = (ss / n) as f32;
    (mean, 1.0 / (var + eps).sqrt())
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gn_fwd_group(
    x: &[f32],
    shift: &[f32],
    gamma: &[f32],
    beta: &[f32],
    hw: usize,
    eps: f32,
    y: &mut [f32],
    stats: &mut [f32],
) {
    let (mean, rstd) = group_stats(x, shift, hw, eps);
    stats[0] = mean;
    stats[1] = rstd;
    for (c, (chan, out)) in x.chunks_exact(hw).zip(y.chunks_exact_mut(hw)).enumerate() {
        // a = ((x + s − μ) r) γ + β = x (r γ) + ((s − μ) r γ + β)
        let scale = rstd * gamma[c];
        let offset = (shift[c] - mean) * scale + beta[c];
        for (o, &v) in out.iter_mut().zip(chan) {
            let a = v * scale + offset;
            *o = a * sigmoid(a);
        }
    }
}
simd_dispatch!(
    gn_fwd_simd,
    gn_fwd_group,
    (x: &[f32], shift: &[f32], gamma: &[f32], beta: &[f32], hw: usize, eps: f32, y: &mut [f32],
     stats: &mut [f32])
);

/// y = silu(GroupNorm(x + shift) γ + β) for x `[B, C, HW]` (NCHW, contiguous), shift `[B, C]`
/// (broadcast over HW), γ, β `[C]`: one pass for the statistics, one for the output, per
/// (example, group), in parallel. Also returns each (example, group)'s mean and 1/√(var + ε),
/// `[B, G, 2]`, which [`group_norm_silu_backward`] reuses instead of computing them again.
pub fn group_norm_silu_forward(
    x: &[f32],
    shift: &[f32],
    gamma: &[f32],
    beta: &[f32],
    s: GnShape,
) -> (Vec<f32>, Vec<f32>) {
    let gsize = s.cpg() * s.hw;
    let mut y = vec![0.0; x.len()];
    let mut stats = vec![0.0; 2 * s.b * s.groups];
    y.par_chunks_mut(gsize)
        .zip(x.par_chunks(gsize))
        .zip(stats.par_chunks_mut(2))
        .enumerate()
        .for_each(|(i, ((y, x), st))| {
            let (b, g) = (i / s.groups, i % s.groups);
            let c0 = g * s.cpg();
            let sh = &shift[b * s.c + c0..b * s.c + c0 + s.cpg()];
            gn_fwd_simd(
                x,
                sh,
                &gamma[c0..c0 + s.cpg()],
                &beta[c0..c0 + s.cpg()],
                s.hw,
                s.eps,
                y,
                st,
            );
        });
    (y, stats)
}

/// Per group: dx (written into `dx`), and per channel of the group Σ da·u and Σ da (for γ, β).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gn_bwd_group(
    x: &[f32],
    g: &[f32],
    shift: &[f32],
    gamma: &[f32],
    beta: &[f32],
    hw: usize,
    (mean, rstd): (f32, f32),
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let n = x.len() as f32;
    // First pass: da = g σ(a)(1 + a(1 − σ(a))) into dx; then per channel Σ da u and Σ da (dγ,
    // dβ), and per group Σ du = Σ da γ and Σ du u.
    let mut sum_du = 0.0f64;
    let mut sum_du_u = 0.0f64;
    for c in 0..gamma.len() {
        let chan = &x[c * hw..(c + 1) * hw];
        let gc = &g[c * hw..(c + 1) * hw];
        let out = &mut dx[c * hw..(c + 1) * hw];
        let off = shift[c] - mean;
        let (gm, bt) = (gamma[c], beta[c]);
        for ((o, &v), &gv) in out.iter_mut().zip(chan).zip(gc) {
            let u = (v + off) * rstd;
            let a = u * gm + bt;
            let sg = sigmoid(a);
            *o = gv * sg * (1.0 + a * (1.0 - sg));
        }
        let da: &[f32] = out;
        let s_da = sum(da);
        // Σ da u = r (Σ da x + off Σ da).
        let s_da_u = rstd * (dot(da, chan) + off * s_da);
        dgamma[c] = s_da_u;
        dbeta[c] = s_da;
        sum_du += (s_da * gm) as f64;
        sum_du_u += (s_da_u * gm) as f64;
    }
    // dx = r (du − mean(du) − u mean(du u)), du = da γ.
    let m_du = (sum_du / n as f64) as f32;
    let m_duu = (sum_du_u / n as f64) as f32;
    for c in 0..gamma.len() {
        let chan = &x[c * hw..(c + 1) * hw];
        let out = &mut dx[c * hw..(c + 1) * hw];
        let off = shift[c] - mean;
        let gm = gamma[c];
        for (o, &v) in out.iter_mut().zip(chan) {
            let u = (v + off) * rstd;
            *o = rstd * (*o * gm - m_du - u * m_duu);
        }
    }
}
simd_dispatch!(
    gn_bwd_simd,
    gn_bwd_group,
    (x: &[f32], g: &[f32], shift: &[f32], gamma: &[f32], beta: &[f32], hw: usize,
     stats: (f32, f32), dx: &mut [f32], dgamma: &mut [f32], dbeta: &mut [f32])
);

/// Gradients of [`group_norm_silu_forward`] given dL/dy and the forward's statistics:
/// (dx `[B, C, HW]`, dshift `[B, C]`, dγ `[C]`, dβ `[C]`). dshift is Σ_hw dx; dγ and dβ are
/// summed over the batch in a fixed order.
pub fn group_norm_silu_backward(
    x: &[f32],
    shift: &[f32],
    gamma: &[f32],
    beta: &[f32],
    grad: &[f32],
    stats: &[f32],
    s: GnShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let cpg = s.cpg();
    let gsize = cpg * s.hw;
    let mut dx = vec![0.0; x.len()];
    // Per (example, channel) partial sums of dγ and dβ, reduced over the batch afterwards.
    let mut pg = vec![0.0f32; s.b * s.c];
    let mut pb = vec![0.0f32; s.b * s.c];
    dx.par_chunks_mut(gsize)
        .zip(pg.par_chunks_mut(cpg).zip(pb.par_chunks_mut(cpg)))
        .enumerate()
        .for_each(|(i, (dx, (pg, pb)))| {
            let (b, g) = (i / s.groups, i % s.groups);
            let c0 = g * cpg;
            let base = i * gsize;
            gn_bwd_simd(
                &x[base..base + gsize],
                &grad[base..base + gsize],
                &shift[b * s.c + c0..b * s.c + c0 + cpg],
                &gamma[c0..c0 + cpg],
                &beta[c0..c0 + cpg],
                s.hw,
                (stats[2 * i], stats[2 * i + 1]),
                dx,
                pg,
                pb,
            );
        });
    let dshift: Vec<f32> = dx.chunks_exact(s.hw).map(|c| c.iter().sum()).collect();
    let mut dgamma = vec![0.0f32; s.c];
    let mut dbeta = vec![0.0f32; s.c];
    for b in 0..s.b {
        for c in 0..s.c {
            dgamma[c] += pg[b * s.c + c];
            dbeta[c] += pb[b * s.c + c];
        }
    }
    (dx, dshift, dgamma, dbeta)
}

/// Shapes of a convolution: 3×3 with padding 1 and stride 1 or 2, or 1×1 (pointwise, stride
/// 1, no padding).
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    pub b: usize,
    pub cin: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
    pub stride: usize,
    /// Kernel size: 3, or 1 for a pointwise convolution.
    pub ksize: usize,
}

impl ConvShape {
    /// Output height and width: ⌊(H + 2 − 3)/s⌋ + 1 (3×3), H and W (1×1).
    pub fn out_hw(&self) -> (usize, usize) {
        if self.ksize == 1 {
            return (self.h, self.w);
        }
        (
            (self.h - 1) / self.stride + 1,
            (self.w - 1) / self.stride + 1,
        )
    }
    /// Output positions per channel.
    fn ohw(&self) -> usize {
        let (a, b) = self.out_hw();
        a * b
    }
    fn hw(&self) -> usize {
        self.h * self.w
    }
    fn k(&self) -> usize {
        self.cin * self.ksize * self.ksize
    }
    /// Whether the direct kernels ([`direct`]) compute this convolution: 3×3 at stride 1 on a
    /// CPU with AVX2 and FMA.
    fn uses_direct(&self) -> bool {
        self.ksize == 3 && self.stride == 1 && direct::available()
    }
}

thread_local! {
    /// Per-thread scratch for one example's columns, reused across calls (no large
    /// allocations, hence no page faults, in the hot loop).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut v = s.borrow_mut();
        if v.len() < len {
            v.resize(len, 0.0);
        }
        f(&mut v[..len])
    })
}

/// C (m × n, row stride `c_rs`) = [C +] A (m × k) B (k × n), each operand given by its row and
/// column strides, by the gemm crate on this thread.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    c_rs: usize,
    accumulate: bool,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
) {
    // Every index the gemm reads or writes lies inside its slice.
    assert!(m == 0 || n == 0 || (m - 1) * c_rs + n <= c.len());
    assert!(m == 0 || k == 0 || (m - 1) * a_rs + (k - 1) * a_cs < a.len());
    assert!(k == 0 || n == 0 || (k - 1) * b_rs + (n - 1) * b_cs < b.len());
    // SAFETY: the asserts above bound every access; the slices do not alias (one is &mut).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// One example's im2col in the NCHW-native (Caffe) layout `[Cin·9, H·W]`: row ci·9 + ky·3 + kx
/// holds input channel ci shifted by (ky − 1, kx − 1), zero outside; every element is written.
fn im2col_one(x: &[f32], s: ConvShape, col: &mut [f32]) {
    if s.stride != 1 {
        return im2col_strided(x, s, col);
    }
    let (h, w, hw) = (s.h, s.w, s.hw());
    for (ci, plane) in x.chunks_exact(hw).enumerate() {
        for ky in 0..3 {
            for kx in 0..3 {
                let r = ci * 9 + ky * 3 + kx;
                let row = &mut col[r * hw..(r + 1) * hw];
                for y in 0..h {
                    let dst = &mut row[y * w..(y + 1) * w];
                    let sy = y as isize + ky as isize - 1;
                    if sy < 0 || sy >= h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[sy as usize * w..(sy as usize + 1) * w];
                    match kx {
                        0 => {
                            dst[0] = 0.0;
                            dst[1..].copy_from_slice(&src[..w - 1]);
                        }
                        1 => dst.copy_from_slice(src),
                        _ => {
                            dst[..w - 1].copy_from_slice(&src[1..]);
                            dst[w - 1] = 0.0;
                        }
                    }
                }
            }
        }
    }
}

/// col2im for one example, the adjoint of [`im2col_one`]: dx (zeroed here) = Σ of the rows
/// shifted back.
fn col2im_one(dcol: &[f32], s: ConvShape, dx: &mut [f32]) {
    dx.fill(0.0);
    if s.stride != 1 {
        return col2im_strided(dcol, s, dx);
    }
    let (h, w, hw) = (s.h, s.w, s.hw());
    for (ci, plane) in dx.chunks_exact_mut(hw).enumerate() {
        for ky in 0..3 {
            for kx in 0..3 {
                let r = ci * 9 + ky * 3 + kx;
                let row = &dcol[r * hw..(r + 1) * hw];
                for y in 0..h {
                    let sy = y as isize + ky as isize - 1;
                    if sy < 0 || sy >= h as isize {
                        continue;
                    }
                    let dst = &mut plane[sy as usize * w..(sy as usize + 1) * w];
                    let src = &row[y * w..(y + 1) * w];
                    let (d, s) = match kx {
                        0 => (&mut dst[..w - 1], &src[1..]),
                        1 => (&mut dst[..], src),
                        _ => (&mut dst[1..], &src[..w - 1]),
                    };
                    for (a, b) in d.iter_mut().zip(s) {
                        *a += *b;
                    }
                }
            }
        }
    }
}

/// [`im2col_one`] for stride s > 1: column (oy, ox) of row (ci, ky, kx) is input
/// (oy s + ky − 1, ox s + kx − 1), zero outside.
fn im2col_strided(x: &[f32], s: ConvShape, col: &mut [f32]) {
    let (h, w, hw, st) = (s.h as isize, s.w as isize, s.hw(), s.stride as isize);
    let (ho, wo) = s.out_hw();
    let ohw = ho * wo;
    for (ci, plane) in x.chunks_exact(hw).enumerate() {
        for ky in 0..3isize {
            for kx in 0..3isize {
                let r = ci * 9 + (ky * 3 + kx) as usize;
                let row = &mut col[r * ohw..(r + 1) * ohw];
                for oy in 0..ho {
                    let dst = &mut row[oy * wo..(oy + 1) * wo];
                    let sy = oy as isize * st + ky - 1;
                    if sy < 0 || sy >= h {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[sy as usize * w as usize..(sy as usize + 1) * w as usize];
                    for (ox, d) in dst.iter_mut().enumerate() {
                        let sx = ox as isize * st + kx - 1;
                        *d = if sx >= 0 && sx < w {
                            src[sx as usize]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// [`col2im_one`] for stride s > 1 (dx already zeroed).
fn col2im_strided(dcol: &[f32], s: ConvShape, dx: &mut [f32]) {
    let (h, w, hw, st) = (s.h as isize, s.w as isize, s.hw(), s.stride as isize);
    let (ho, wo) = s.out_hw();
    let ohw = ho * wo;
    for (ci, plane) in dx.chunks_exact_mut(hw).enumerate() {
        for ky in 0..3isize {
            for kx in 0..3isize {
                let r = ci * 9 + (ky * 3 + kx) as usize;
                let row = &dcol[r * ohw..(r + 1) * ohw];
                for oy in 0..ho {
                    let sy = oy as isize * st + ky - 1;
                    if sy < 0 || sy >= h {
                        continue;
                    }
                    let dst = &mut plane[sy as usize * w as usize..(sy as usize + 1) * w as usize];
                    for (ox, v) in row[oy * wo..(oy + 1) * wo].iter().enumerate() {
                        let sx = ox as isize * st + kx - 1;
                        if sx >= 0 && sx < w {
                            dst[sx as usize] += v;
                        }
                    }
                }
            }
        }
    }
}

/// y_b = W [Cout, Cin·9] × col_b [Cin·9, Ho·Wo] + bias for each example in parallel: NCHW in,
/// NCHW out, no layout conversion.
pub fn conv3x3_forward(x: &[f32], weight: &[f32], bias: &[f32], s: ConvShape) -> Vec<f32> {
    if s.uses_direct() {
        conv3x3_forward_direct(x, weight, bias, s)
    } else {
        conv3x3_forward_im2col(x, weight, bias, s)
    }
}

/// [`conv3x3_forward`] by the direct kernel (3×3, stride 1, AVX2 + FMA).
fn conv3x3_forward_direct(x: &[f32], weight: &[f32], bias: &[f32], s: ConvShape) -> Vec<f32> {
    let hw = s.hw();
    let mut y = vec![0.0f32; s.b * s.cout * hw];
    let g = direct::Geom::new(s.h, s.w);
    let packed = direct::pack_forward(weight, s.cout, s.cin);
    y.par_chunks_mut(s.cout * hw)
        .zip(x.par_chunks(s.cin * hw))
        .for_each(|(yb, xb)| {
            with_scratch(direct::scratch_len(s.cin, s.cout, g), |scr| {
                direct::conv_example(xb, &packed, Some(bias), s.cin, s.cout, g, yb, scr)
            })
        });
    y
}

/// [`conv3x3_forward`] by im2col and GEMM (any stride, 1×1 too).
fn conv3x3_forward_im2col(x: &[f32], weight: &[f32], bias: &[f32], s: ConvShape) -> Vec<f32> {
    let (hw, ohw, k) = (s.hw(), s.ohw(), s.k());
    let mut y = vec![0.0f32; s.b * s.cout * ohw];
    y.par_chunks_mut(s.cout * ohw)
        .zip(x.par_chunks(s.cin * hw))
        .for_each(|(yb, xb)| {
            if s.ksize == 1 {
                // Pointwise: the input itself is the column matrix [Cin, H·W].
                sgemm(s.cout, ohw, k, yb, ohw, false, weight, (k, 1), xb, (ohw, 1));
            } else {
                with_scratch(k * ohw, |col| {
                    im2col_one(xb, s, col);
                    sgemm(
                        s.cout,
                        ohw,
                        k,
                        yb,
                        ohw,
                        false,
                        weight,
                        (k, 1),
                        col,
                        (ohw, 1),
                    );
                });
            }
            for (row, &bv) in yb.chunks_exact_mut(ohw).zip(bias) {
                row.iter_mut().for_each(|v| *v += bv);
            }
        });
    y
}

/// Parts of the batch whose weight gradients are summed separately (in parallel), then added in
/// order.
const DW_PARTS: usize = 8;

/// Gradients of [`conv3x3_forward`]: dx_b = col2im(Wᵀ dy_b); dW = Σ_b dy_b col_bᵀ, summed over
/// a fixed split of the batch ([`DW_PARTS`] parts) in a fixed order; dbias = Σ dy.
pub fn conv3x3_backward(
    x: &[f32],
    weight: &[f32],
    grad: &[f32],
    s: ConvShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    if s.uses_direct() {
        conv3x3_backward_direct(x, weight, grad, s)
    } else {
        conv3x3_backward_im2col(x, weight, grad, s)
    }
}

/// [`conv3x3_backward`] by GEMMs and col2im (any stride, 1×1 too).
fn conv3x3_backward_im2col(
    x: &[f32],
    weight: &[f32],
    grad: &[f32],
    s: ConvShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (hw, ohw, k) = (s.hw(), s.ohw(), s.k());
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(s.cin * hw)
        .zip(grad.par_chunks(s.cout * ohw))
        .for_each(|(dxb, gb)| {
            if s.ksize == 1 {
                sgemm(
                    k,
                    ohw,
                    s.cout,
                    dxb,
                    ohw,
                    false,
                    weight,
                    (1, k),
                    gb,
                    (ohw, 1),
                );
                return;
            }
            with_scratch(k * ohw, |dcol| {
                // Wᵀ: [Cin·9, Cout] with row stride 1 and column stride Cin·9.
                sgemm(
                    k,
                    ohw,
                    s.cout,
                    dcol,
                    ohw,
                    false,
                    weight,
                    (1, k),
                    gb,
                    (ohw, 1),
                );
                col2im_one(dcol, s, dxb);
            });
        });
    let dw = weight_grad_in_parts(s, |b, acc| {
        let xb = &x[b * s.cin * hw..(b + 1) * s.cin * hw];
        let gb = &grad[b * s.cout * ohw..(b + 1) * s.cout * ohw];
        if s.ksize == 1 {
            sgemm(s.cout, k, ohw, acc, k, true, gb, (ohw, 1), xb, (1, ohw));
            return;
        }
        with_scratch(k * ohw, |col| {
            im2col_one(xb, s, col);
            // dW += dy_b [Cout, Ho·Wo] × col_bᵀ [Ho·Wo, Cin·9].
            sgemm(s.cout, k, ohw, acc, k, true, gb, (ohw, 1), col, (1, ohw));
        });
    });
    (dx, dw, bias_grad(grad, s))
}

/// dW `[Cout, Cin·k²]` = Σ_b of what `add_example(b, acc)` adds for example b, summed over a
/// fixed split of the batch ([`DW_PARTS`] parts, in parallel), the parts then added in order.
/// A fixed split (not one part per thread): the sum's order, hence dW to the last bit, does
/// not depend on the machine's core count.
fn weight_grad_in_parts(s: ConvShape, add_example: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let k = s.k();
    let parts = DW_PARTS.clamp(1, s.b.max(1));
    let per = s.b.div_ceil(parts);
    let partial: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|p| {
            let mut acc = vec![0.0f32; s.cout * k];
            for b in (p * per)..((p + 1) * per).min(s.b) {
                add_example(b, &mut acc);
            }
            acc
        })
        .collect();
    let mut dw = vec![0.0f32; s.cout * k];
    for p in &partial {
        for (a, v) in dw.iter_mut().zip(p) {
            *a += v;
        }
    }
    dw
}

/// dbias = Σ over examples and positions of dy, per output channel.
fn bias_grad(grad: &[f32], s: ConvShape) -> Vec<f32> {
    let ohw = s.ohw();
    let mut db = vec![0.0f32; s.cout];
    for gb in grad.chunks_exact(s.cout * ohw) {
        for (c, row) in gb.chunks_exact(ohw).enumerate() {
            db[c] += sum(row);
        }
    }
    db
}

/// [`conv3x3_backward`] by the direct kernels (stride 1, 3×3): dx is the convolution of dy by
/// the transposed, flipped weights; dW is summed over the same fixed parts of the batch.
fn conv3x3_backward_direct(
    x: &[f32],
    weight: &[f32],
    grad: &[f32],
    s: ConvShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let hw = s.hw();
    let g = direct::Geom::new(s.h, s.w);
    let mut dx = vec![0.0f32; x.len()];
    let packed = direct::pack_transposed(weight, s.cout, s.cin);
    dx.par_chunks_mut(s.cin * hw)
        .zip(grad.par_chunks(s.cout * hw))
        .for_each(|(dxb, gb)| {
            with_scratch(direct::scratch_len(s.cout, s.cin, g), |scr| {
                direct::conv_example(gb, &packed, None, s.cout, s.cin, g, dxb, scr)
            })
        });
    let dw = weight_grad_in_parts(s, |b, acc| {
        let xb = &x[b * s.cin * hw..(b + 1) * s.cin * hw];
        let gb = &grad[b * s.cout * hw..(b + 1) * s.cout * hw];
        with_scratch(direct::scratch_len(s.cin, s.cout, g), |scr| {
            direct::weight_grad_example(xb, gb, s.cin, s.cout, g, acc, scr)
        });
    });
    (dx, dw, bias_grad(grad, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution by its definition, in f64: y, dx, dW, db for dy = g.
    #[allow(clippy::type_complexity)]
    fn conv_by_definition(
        x: &[f32],
        wt: &[f32],
        bias: &[f32],
        g: &[f32],
        s: ConvShape,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (ho, wo) = s.out_hw();
        let (kz, pad) = (s.ksize as isize, if s.ksize == 3 { 1 } else { 0 });
        let mut y = vec![0.0f64; s.b * s.cout * ho * wo];
        let mut dx = vec![0.0f64; x.len()];
        let mut dw = vec![0.0f64; wt.len()];
        let mut db = vec![0.0f64; s.cout];
        for b in 0..s.b {
            for co in 0..s.cout {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let o = ((b * s.cout + co) * ho + oy) * wo + ox;
                        let mut acc = bias[co] as f64;
                        db[co] += g[o] as f64;
                        for ci in 0..s.cin {
                            for ky in 0..kz {
                                for kx in 0..kz {
                                    let iy = (oy * s.stride) as isize + ky - pad;
                                    let ix = (ox * s.stride) as isize + kx - pad;
                                    if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize
                                    {
                                        continue;
                                    }
                                    let i =
                                        ((b * s.cin + ci) * s.h + iy as usize) * s.w + ix as usize;
                                    let wi = ((co * s.cin + ci) as isize * kz + ky) * kz + kx;
                                    acc += wt[wi as usize] as f64 * x[i] as f64;
                                    dx[i] += wt[wi as usize] as f64 * g[o] as f64;
                                    dw[wi as usize] += x[i] as f64 * g[o] as f64;
                                }
                            }
                        }
                        y[o] = acc;
                    }
                }
            }
        }
        (y, dx, dw, db)
    }

    #[test]
    fn convolution_matches_its_definition() {
        // Batches of 2 to 20 (more examples than the dW split has parts, and fewer), stride 1
        // and 2, 3×3 and 1×1, square, oblong and one-pixel-wide planes. f32 against the f64
        // definition: 1e-5 of the largest value is a few f32 rounding steps for sums of at most
        // 9·Cin products.
        let mut rng = crate::rng::seeded(7);
        let mut normal = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng))
                .collect()
        };
        for &(b, cin, cout, h, w, stride, ksize) in &[
            (2, 3, 4, 28, 28, 1, 3),
            (20, 4, 6, 7, 7, 1, 3),
            (9, 2, 3, 14, 14, 2, 3),
            (9, 3, 2, 14, 14, 1, 1),
            (3, 2, 3, 4, 1, 1, 3),
            (3, 5, 4, 6, 9, 2, 3),
            // The U-Net's shapes, and channel counts that leave a partial block of four.
            (3, 16, 32, 28, 28, 1, 3),
            (2, 64, 64, 7, 7, 1, 3),
            (2, 32, 1, 28, 28, 1, 3),
            (5, 1, 5, 3, 11, 1, 3),
            (2, 7, 6, 1, 1, 1, 3),
        ] {
            let s = ConvShape {
                b,
                cin,
                cout,
                h,
                w,
                stride,
                ksize,
            };
            let (ho, wo) = s.out_hw();
            let x = normal(b * cin * h * w);
            let wt = normal(cout * cin * ksize * ksize);
            let bias = normal(cout);
            let g = normal(b * cout * ho * wo);
            let (y0, dx0, dw0, db0) = conv_by_definition(&x, &wt, &bias, &g, s);
            // Both paths where this CPU runs the direct one (the default path is one of them).
            let mut paths = vec![(
                "im2col",
                conv3x3_forward_im2col(&x, &wt, &bias, s),
                conv3x3_backward_im2col(&x, &wt, &g, s),
            )];
            if s.uses_direct() {
                paths.push((
                    "direct",
                    conv3x3_forward_direct(&x, &wt, &bias, s),
                    conv3x3_backward_direct(&x, &wt, &g, s),
                ));
            }
            for (path, y1, (dx1, dw1, db1)) in &paths {
                for (what, got, want) in [
                    ("y", y1, &y0),
                    ("dx", dx1, &dx0),
                    ("dW", dw1, &dw0),
                    ("db", db1, &db0),
                ] {
                    assert_eq!(got.len(), want.len(), "{what}");
                    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                    for (i, (p, q)) in got.iter().zip(want.iter()).enumerate() {
                        assert!(
                            (*p as f64 - q).abs() <= 1e-5 * scale,
                            "{path} {what}[{i}] of {s:?}: {p} vs {q}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn exp_is_accurate_over_the_range_it_is_used_on() {
        // Relative error below 4e-7 (two f32 ulps) from −87 to 88, exact limits beyond, NaN kept.
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(exp(1000.0), exp(88.0));
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) == exp(-87.0));
        assert!(exp(f32::NAN).is_nan());
        // softplus within 3e-7 relative (plus 1e-7 absolute) of the f64 formula, no overflow.
        let mut x = -100.0f32;
        while x < 100.0 {
            let want = (x as f64).max(0.0) + (-(x as f64).abs()).exp().ln_1p();
            let got = softplus(x) as f64;
            assert!(
                (got - want).abs() < 3e-7 * want.abs() + 1e-7,
                "softplus({x}) {got} vs {want}"
            );
            x += 0.0173;
        }
        assert!((sigmoid(-200.0)).abs() < 1e-37 && (sigmoid(200.0) - 1.0).abs() < 1e-7);
    }
}
