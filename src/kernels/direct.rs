//! The direct 3×3 convolution (stride 1, padding 1) with AVX2 + FMA, chosen at run time: no
//! im2col, no col2im, no packing of the image.
//!
//! Each input plane is copied once into a zero-bordered plane of row stride W + 2 (`Geom`).
//! An output position q = oy·(W + 2) + ox then reads its nine taps at the fixed offsets
//! ky·(W + 2) + kx, so the convolution is one accumulation over (ci, ky, kx) of shifted rows
//! of the padded input: a GEMM whose right-hand side is read in place. The micro-kernel keeps
//! 4 output channels × 16 positions in registers; the two columns of the border that each
//! output row computes (ox ≥ W) are discarded on the copy out. The input's gradient is the
//! same kernel on the output's gradient with the weights transposed and flipped; the weights'
//! gradient accumulates, for 4 output channels and one input row offset, the three taps of a
//! row at once over the positions. Every output element is computed by one thread in a fixed
//! order, so results do not depend on the thread count.

/// Output channels per micro-kernel.
const MR: usize = 4;
/// Floats per AVX register.
const LANES: usize = 8;
/// AVX registers of output positions per micro-kernel (16 positions). Three (24 positions,
/// twelve accumulators) measured slower on the default recipe's step: 152–170 against 180–189
/// images/s at one thread (AMD EPYC Zen 3, interleaved rounds).
const NV: usize = 2;

/// Whether the direct kernels run on this CPU (AVX2 and FMA), and are not turned off
/// (`ELBO_CONV=im2col`, for measurements).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var("ELBO_CONV").is_ok_and(|v| v.trim() == "im2col") {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// One example's padded geometry.
#[derive(Debug, Clone, Copy)]
pub struct Geom {
    h: usize,
    w: usize,
    /// Row stride of a padded plane: W + 2.
    wp: usize,
    /// Output positions computed, H·(W + 2) (the last two of each row discarded), rounded up to the micro-kernel's width.
    qp: usize,
    /// Length of one padded plane, with room for the last block's reads.
    lp: usize,
}

impl Geom {
    pub fn new(h: usize, w: usize) -> Geom {
        let wp = w + 2;
        let q = h * wp;
        let qp = q.div_ceil(NV * LANES) * NV * LANES;
        // The furthest read: position qp − 1 at tap offset 2·wp + 2.
        let lp = (qp + 2 * wp + 2).max((h + 2) * wp);
        Geom { h, w, wp, qp, lp }
    }
}

/// Channels rounded up to whole micro-kernel blocks.
fn blocks(c: usize) -> usize {
    c.div_ceil(MR)
}

/// Scratch floats one example needs: the padded input (`cin` planes) and the padded output, or
/// the padded output's gradient (`cout` rounded up to MR rows of `qp`).
pub fn scratch_len(cin: usize, cout: usize, g: Geom) -> usize {
    cin * g.lp + blocks(cout) * MR * g.qp
}

/// Split one example's scratch ([`scratch_len`]) into the padded input, filled from `x`, and
/// the `[cout↑MR][qp]` rows that follow it.
fn pad_into_scratch<'a>(
    x: &[f32],
    cin: usize,
    cout: usize,
    g: Geom,
    scratch: &'a mut [f32],
) -> (&'a [f32], &'a mut [f32]) {
    let (xp, rows) = scratch.split_at_mut(cin * g.lp);
    pad(x, cin, g, xp);
    (xp, &mut rows[..blocks(cout) * MR * g.qp])
}

/// Copy `c` planes of h×w into zero-bordered planes of `g` (every element of `xp` written).
pub fn pad(x: &[f32], c: usize, g: Geom, xp: &mut [f32]) {
    let (h, w, wp, lp) = (g.h, g.w, g.wp, g.lp);
    for ci in 0..c {
        let src = &x[ci * h * w..(ci + 1) * h * w];
        let dst = &mut xp[ci * lp..(ci + 1) * lp];
        dst[..wp + 1].fill(0.0);
        for y in 0..h {
            let row = &mut dst[(y + 1) * wp + 1..(y + 1) * wp + 1 + w];
            row.copy_from_slice(&src[y * w..(y + 1) * w]);
            // The right border of this row and the left border of the next.
            dst[(y + 1) * wp + 1 + w..(y + 2) * wp + 1].fill(0.0);
        }
        dst[(h + 1) * wp + 1..].fill(0.0);
    }
}

/// Pack the weights `[cout, cin, 3, 3]` for the forward micro-kernel: `[cout/MR][cin][9][MR]`,
/// zero rows past `cout`.
pub fn pack_forward(weight: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let mut p = vec![0.0f32; blocks(cout) * cin * 9 * MR];
    for co in 0..cout {
        let (cb, r) = (co / MR, co % MR);
        for ci in 0..cin {
            for t in 0..9 {
                p[((cb * cin + ci) * 9 + t) * MR + r] = weight[(co * cin + ci) * 9 + t];
            }
        }
    }
    p
}

/// Pack the weights for the input's gradient: the convolution of dy (`cout` channels) by the
/// transposed, flipped kernel W'[ci, co, t] = W[co, ci, 8 − t], as [`pack_forward`] packs.
pub fn pack_transposed(weight: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let mut p = vec![0.0f32; blocks(cin) * cout * 9 * MR];
    for ci in 0..cin {
        let (cb, r) = (ci / MR, ci % MR);
        for co in 0..cout {
            for t in 0..9 {
                p[((cb * cout + co) * 9 + t) * MR + r] = weight[(co * cin + ci) * 9 + (8 - t)];
            }
        }
    }
    p
}

/// One example: y `[cout, h, w]` (every element written) = conv(x `[cin, h, w]`) + bias, with
/// `packed` from [`pack_forward`] (or [`pack_transposed`], channels swapped, no bias).
/// `scratch` holds at least [`scratch_len`] floats.
#[allow(clippy::too_many_arguments)]
pub fn conv_example(
    x: &[f32],
    packed: &[f32],
    bias: Option<&[f32]>,
    cin: usize,
    cout: usize,
    g: Geom,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(x.len() >= cin * g.h * g.w && y.len() >= cout * g.h * g.w);
    assert!(packed.len() >= blocks(cout) * cin * 9 * MR);
    let (xp, yp) = pad_into_scratch(x, cin, cout, g, scratch);
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available(), "the direct convolution needs AVX2 and FMA");
        // SAFETY: the CPU has AVX2 and FMA (checked above); the kernel reads xp below
        // ci·lp + qp + 2·wp + 2 ≤ cin·lp and writes yp below blocks·MR·qp, both asserted.
        unsafe { forward_avx2(xp, packed, cin, blocks(cout), g, yp) };
    }
    let (h, w, wp, qp) = (g.h, g.w, g.wp, g.qp);
    for co in 0..cout {
        let b = bias.map_or(0.0, |b| b[co]);
        for oy in 0..h {
            let src = &yp[co * qp + oy * wp..co * qp + oy * wp + w];
            let dst = &mut y[(co * h + oy) * w..(co * h + oy + 1) * w];
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s + b;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_avx2(
    xp: &[f32],
    packed: &[f32],
    cin: usize,
    cblocks: usize,
    g: Geom,
    yp: &mut [f32],
) {
    assert!(xp.len() >= cin * g.lp && g.lp >= g.qp + 2 * g.wp + 2);
    assert!(yp.len() >= cblocks * MR * g.qp && packed.len() >= cblocks * cin * 9 * MR);
    assert!(g.qp % (NV * LANES) == 0);
    forward_tiles::<NV>(xp, packed, cin, cblocks, g, yp)
}

/// The forward micro-kernel over all tiles: MR output channels × NV registers of positions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_tiles<const NV: usize>(
    xp: &[f32],
    packed: &[f32],
    cin: usize,
    cblocks: usize,
    g: Geom,
    yp: &mut [f32],
) {
    use std::arch::x86_64::*;
    let wp = g.wp;
    let offs = [0, 1, 2, wp, wp + 1, wp + 2, 2 * wp, 2 * wp + 1, 2 * wp + 2];
    let (xs, ws, ys) = (xp.as_ptr(), packed.as_ptr(), yp.as_mut_ptr());
    for cb in 0..cblocks {
        let wb = ws.add(cb * cin * 9 * MR);
        let mut q = 0;
        while q < g.qp {
            let mut acc = [[_mm256_setzero_ps(); NV]; MR];
            for ci in 0..cin {
                let xb = xs.add(ci * g.lp + q);
                let wc = wb.add(ci * 9 * MR);
                for (t, &off) in offs.iter().enumerate() {
                    let mut v = [_mm256_setzero_ps(); NV];
                    for (j, vj) in v.iter_mut().enumerate() {
                        *vj = _mm256_loadu_ps(xb.add(off + j * LANES));
                    }
                    for (r, ar) in acc.iter_mut().enumerate() {
                        let wv = _mm256_broadcast_ss(&*wc.add(t * MR + r));
                        for (a, vj) in ar.iter_mut().zip(&v) {
                            *a = _mm256_fmadd_ps(wv, *vj, *a);
                        }
                    }
                }
            }
            for (r, ar) in acc.iter().enumerate() {
                let yr = ys.add((cb * MR + r) * g.qp + q);
                for (j, a) in ar.iter().enumerate() {
                    _mm256_storeu_ps(yr.add(j * LANES), *a);
                }
            }
            q += NV * LANES;
        }
    }
}

/// Copy one example's gradient dy `[cout, h, w]` into rows of stride W + 2 (`[cout↑MR][qp]`),
/// zero in the two border columns, past `q` and in the rows past `cout`.
pub fn pad_grad(dy: &[f32], cout: usize, g: Geom, dyp: &mut [f32]) {
    let (h, w, wp, qp) = (g.h, g.w, g.wp, g.qp);
    dyp.fill(0.0);
    for co in 0..cout {
        for oy in 0..h {
            dyp[co * qp + oy * wp..co * qp + oy * wp + w]
                .copy_from_slice(&dy[(co * h + oy) * w..(co * h + oy + 1) * w]);
        }
    }
}

/// dW `[cout, cin, 3, 3]` += Σ_positions dy[co, p] x[ci, p + tap] for one example.
#[allow(clippy::too_many_arguments)]
pub fn weight_grad_example(
    x: &[f32],
    dy: &[f32],
    cin: usize,
    cout: usize,
    g: Geom,
    dw: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(dw.len() >= cout * cin * 9);
    let (xp, dyp) = pad_into_scratch(x, cin, cout, g, scratch);
    pad_grad(dy, cout, g, dyp);
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available(), "the direct convolution needs AVX2 and FMA");
        // SAFETY: AVX2 and FMA are present; reads of xp end below ci·lp + 2·wp + qp + 2 ≤
        // cin·lp, reads of dyp below blocks·MR·qp, writes of dw below cout·cin·9 (asserted).
        unsafe { weight_grad_avx2(xp, dyp, cin, cout, g, dw) };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_grad_avx2(
    xp: &[f32],
    dyp: &[f32],
    cin: usize,
    cout: usize,
    g: Geom,
    dw: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(xp.len() >= cin * g.lp && g.lp >= g.qp + 2 * g.wp + 2);
    assert!(dyp.len() >= blocks(cout) * MR * g.qp && dw.len() >= cout * cin * 9);
    assert!(g.qp % LANES == 0);
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
    let (xs, ds) = (xp.as_ptr(), dyp.as_ptr());
    for cb in 0..blocks(cout) {
        let db = ds.add(cb * MR * g.qp);
        for ci in 0..cin {
            for ky in 0..3 {
                let xb = xs.add(ci * g.lp + ky * g.wp);
                let mut a = [[_mm256_setzero_ps(); 3]; MR];
                let mut q = 0;
                while q < g.qp {
                    let x0 = _mm256_loadu_ps(xb.add(q));
                    let x1 = _mm256_loadu_ps(xb.add(q + 1));
                    let x2 = _mm256_loadu_ps(xb.add(q + 2));
                    for (r, ar) in a.iter_mut().enumerate() {
                        let d = _mm256_loadu_ps(db.add(r * g.qp + q));
                        ar[0] = _mm256_fmadd_ps(d, x0, ar[0]);
                        ar[1] = _mm256_fmadd_ps(d, x1, ar[1]);
                        ar[2] = _mm256_fmadd_ps(d, x2, ar[2]);
                    }
                    q += LANES;
                }
                for (r, ar) in a.iter().enumerate() {
                    let co = cb * MR + r;
                    if co < cout {
                        let at = (co * cin + ci) * 9 + ky * 3;
                        for (kx, v) in ar.iter().enumerate() {
                            dw[at + kx] += hsum(*v);
                        }
                    }
                }
            }
        }
    }
}
