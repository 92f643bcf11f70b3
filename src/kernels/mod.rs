//! The project's own CPU kernels for the hot operations of its networks, registered through
//! Burn's backend-extension mechanism: a backend trait for each new primitive
//! ([`ElboKernels`]), its Flex implementation (the arithmetic is in [`cpu`]), its autodiff
//! backward, and a `Tensor` function that calls it ([`silu`], [`group_norm_silu`]). Models keep
//! their ordinary code; on a device other than Flex the functions fall back to Burn's own
//! composition of the same mathematics. `ELBO_KERNELS=off` (or a list such as `silu,gn`) chooses
//! which run, for measurements.
//!
//! | kernel | replaces | one pass each way |
//! | --- | --- | --- |
//! | [`silu`] | x · sigmoid(x) (3 ops, scalar `expf`) | vectorised exp |
//! | [`softplus`] | max(x, 0) + log(1 + e^{−|x|}) (6 ops, scalar `expf`, `logf`) | vectorised exp and log |
//! | [`group_norm_silu`] | GroupNorm (about 10 ops) + time-embedding add + SiLU | statistics and output per (example, group); the backward reuses the forward's statistics |
//! | [`conv2d`] | Conv2d 3×3 (stride 1 or 2, padding 1) and 1×1: NCHW→NHWC copies, im2col, GEMM; transposed convolution for dx | 3×3 at stride 1 on AVX2 + FMA: the direct kernel ([`direct`]) on zero-bordered planes, dx by the same kernel with the weights flipped, dW by its own; otherwise im2col (none for 1×1) and GEMM per example on NCHW data. `ELBO_CONV=im2col` turns the direct kernel off, for measurements |

pub mod cpu;
pub mod direct;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Flex};
use burn::nn::GroupNorm;
use burn::tensor::{Tensor, TensorData};

/// The forward kernels, as a Burn backend extension.
#[backend_extension(Flex, Autodiff)]
pub trait ElboKernels: Backend {
    /// SiLU, x σ(x), elementwise.
    fn silu_kernel(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// softplus(x) = log(1 + e^x), elementwise.
    fn softplus_kernel(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// silu(GroupNorm(x + shift) γ + β) for x `[B, C, H, W]`, shift `[B, C]`, γ, β `[C]`.
    fn group_norm_silu_kernel(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
    ) -> FloatTensor<Self>;
    /// A 3×3 convolution, padding 1, stride 1 or 2: x `[B, Cin, H, W]`, weight
    /// `[Cout, Cin, 3, 3]`, bias `[Cout]` → `[B, Cout, Ho, Wo]`.
    fn conv3x3_kernel(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
    ) -> FloatTensor<Self>;
}

/// The backward kernels the autodiff implementations call on the inner backend.
pub trait ElboKernelsBackward: Backend {
    fn silu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    fn softplus_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    /// [`ElboKernels::group_norm_silu_kernel`] that also returns each (example, group)'s mean
    /// and 1/√(var + ε) `[B, G, 2]`, kept for the backward.
    fn group_norm_silu_forward_stats(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// (dx, dshift, dγ, dβ), given the forward's statistics `[B, G, 2]` (which carry the
    /// number of groups and ε).
    #[allow(clippy::type_complexity)]
    fn group_norm_silu_backward(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        stats: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 4];
    /// (dx, dweight, dbias) of [`ElboKernels::conv3x3_kernel`].
    fn conv3x3_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        stride: usize,
    ) -> [FloatTensor<Self>; 3];
}

fn conv_shape(x: &[usize], w: &[usize], stride: usize) -> cpu::ConvShape {
    cpu::ConvShape {
        b: x[0],
        cin: x[1],
        cout: w[0],
        h: x[2],
        w: x[3],
        stride,
        ksize: w[2],
    }
}

/// The f32 values of a Flex tensor in row-major order (copied only if not contiguous) and its
/// shape.
fn values(t: &FlexTensor) -> (std::borrow::Cow<'_, [f32]>, Vec<usize>) {
    let shape = t.layout().shape().to_vec();
    let v = match t.as_slice::<f32>() {
        Some(s) if t.is_contiguous() => std::borrow::Cow::Borrowed(s),
        _ => std::borrow::Cow::Owned(
            t.clone()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default(),
        ),
    };
    (v, shape)
}

fn flex(v: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape))
}

fn gn_shape(x: &[usize], groups: usize, eps: f64) -> cpu::GnShape {
    cpu::GnShape {
        b: x[0],
        c: x[1],
        hw: x[2..].iter().product(),
        groups,
        eps: eps as f32,
    }
}

impl ElboKernels for Flex {
    fn silu_kernel(x: FlexTensor) -> FlexTensor {
        let (v, shape) = values(&x);
        flex(cpu::silu_forward(&v), shape)
    }

    fn softplus_kernel(x: FlexTensor) -> FlexTensor {
        let (v, shape) = values(&x);
        flex(cpu::softplus_forward(&v), shape)
    }

    fn group_norm_silu_kernel(
        x: FlexTensor,
        shift: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        groups: usize,
        eps: f64,
    ) -> FlexTensor {
        <Flex as ElboKernelsBackward>::group_norm_silu_forward_stats(
            x, shift, gamma, beta, groups, eps,
        )
        .0
    }

    fn conv3x3_kernel(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        stride: usize,
    ) -> FlexTensor {
        let (xv, shape) = values(&x);
        let (wv, wshape) = values(&weight);
        let s = conv_shape(&shape, &wshape, stride);
        let y = cpu::conv3x3_forward(&xv, &wv, &values(&bias).0, s);
        let (ho, wo) = s.out_hw();
        flex(y, vec![s.b, s.cout, ho, wo])
    }
}

impl ElboKernelsBackward for Flex {
    fn softplus_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let (xv, shape) = values(&x);
        flex(cpu::softplus_backward(&xv, &values(&grad).0), shape)
    }

    fn conv3x3_backward(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        stride: usize,
    ) -> [FlexTensor; 3] {
        let (xv, shape) = values(&x);
        let (wv, wshape) = values(&weight);
        let s = conv_shape(&shape, &wshape, stride);
        let (dx, dw, db) = cpu::conv3x3_backward(&xv, &wv, &values(&grad).0, s);
        [flex(dx, shape), flex(dw, wshape), flex(db, vec![s.cout])]
    }

    fn silu_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let (xv, shape) = values(&x);
        flex(cpu::silu_backward(&xv, &values(&grad).0), shape)
    }

    fn group_norm_silu_forward_stats(
        x: FlexTensor,
        shift: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        groups: usize,
        eps: f64,
    ) -> (FlexTensor, FlexTensor) {
        let (xv, shape) = values(&x);
        let s = gn_shape(&shape, groups, eps);
        let (y, stats) = cpu::group_norm_silu_forward(
            &xv,
            &values(&shift).0,
            &values(&gamma).0,
            &values(&beta).0,
            s,
        );
        (flex(y, shape), flex(stats, vec![s.b, s.groups, 2]))
    }

    fn group_norm_silu_backward(
        x: FlexTensor,
        shift: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        grad: FlexTensor,
        stats: FlexTensor,
    ) -> [FlexTensor; 4] {
        let (xv, shape) = values(&x);
        let (sv, stats_shape) = values(&stats);
        // ε entered the statistics already; the backward does not read it.
        let s = gn_shape(&shape, stats_shape[1], 0.0);
        let (dx, ds, dg, db) = cpu::group_norm_silu_backward(
            &xv,
            &values(&shift).0,
            &values(&gamma).0,
            &values(&beta).0,
            &values(&grad).0,
            &sv,
            s,
        );
        [
            flex(dx, shape),
            flex(ds, vec![s.b, s.c]),
            flex(dg, vec![s.c]),
            flex(db, vec![s.c]),
        ]
    }
}

impl<B: Backend + ElboKernels + ElboKernelsBackward, C: CheckpointStrategy> ElboKernels
    for Autodiff<B, C>
{
    fn silu_kernel(x: FloatTensor<Self>) -> FloatTensor<Self> {
        unary_autodiff::<B, C>(x, B::silu_kernel, B::silu_backward)
    }

    fn softplus_kernel(x: FloatTensor<Self>) -> FloatTensor<Self> {
        unary_autodiff::<B, C>(x, B::softplus_kernel, B::softplus_backward)
    }

    fn group_norm_silu_kernel(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct GnSiluBackward;
        impl<B: Backend + ElboKernelsBackward> Backward<B, 4> for GnSiluBackward {
            type State = [FloatTensor<B>; 5];
            fn backward(
                self,
                ops: Ops<Self::State, 4>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let grad = grads.consume::<B>(&ops.node);
                let [x, shift, gamma, beta, stats] = ops.state;
                let g = B::group_norm_silu_backward(x, shift, gamma, beta, grad, stats);
                for (parent, g) in ops.parents.into_iter().zip(g) {
                    if let Some(node) = parent {
                        grads.register::<B>(node.id, g);
                    }
                }
            }
        }
        match GnSiluBackward
            .prepare::<C>([x.node(), shift.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, s, g, b) = (
                    x.into_primitive(),
                    shift.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                );
                let (out, stats) = B::group_norm_silu_forward_stats(
                    x.clone(),
                    s.clone(),
                    g.clone(),
                    b.clone(),
                    groups,
                    eps,
                );
                prep.finish([x, s, g, b, stats], out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::group_norm_silu_kernel(
                x.into_primitive(),
                shift.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                groups,
                eps,
            )),
        }
    }

    fn conv3x3_kernel(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
    ) -> FloatTensor<Self> {
        conv3x3_autodiff::<B, C>(x, weight, bias, stride)
    }
}

/// An elementwise kernel y = forward(x) as one autodiff operation that keeps x, with its
/// gradient dx = backward(x, dy).
fn unary_autodiff<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    forward: fn(FloatTensor<B>) -> FloatTensor<B>,
    backward: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    struct UnaryBackward<B: Backend> {
        backward: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
    }
    impl<B: Backend> std::fmt::Debug for UnaryBackward<B> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("UnaryBackward")
        }
    }
    impl<B: Backend> Backward<B, 1> for UnaryBackward<B> {
        type State = FloatTensor<B>;
        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let grad = grads.consume::<B>(&ops.node);
            let [parent] = ops.parents;
            if let Some(node) = parent {
                grads.register::<B>(node.id, (self.backward)(ops.state, grad));
            }
        }
    }
    match (UnaryBackward { backward })
        .prepare::<C>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let input = x.into_primitive();
            let out = forward(input.clone());
            prep.finish(input, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive())),
    }
}

/// The autodiff backward of the convolution (kept apart for readability).
fn conv3x3_autodiff<B: Backend + ElboKernels + ElboKernelsBackward, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
    stride: usize,
) -> FloatTensor<Autodiff<B, C>> {
    #[derive(Debug)]
    struct Conv3Backward;
    impl<B: Backend + ElboKernelsBackward> Backward<B, 3> for Conv3Backward {
        type State = (FloatTensor<B>, FloatTensor<B>, usize);
        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let grad = grads.consume::<B>(&ops.node);
            let (x, w, stride) = ops.state;
            let g = B::conv3x3_backward(x, w, grad, stride);
            for (parent, g) in ops.parents.into_iter().zip(g) {
                if let Some(node) = parent {
                    grads.register::<B>(node.id, g);
                }
            }
        }
    }
    match Conv3Backward
        .prepare::<C>([x.node(), weight.node(), bias.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (x, w, b) = (
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            );
            let out = B::conv3x3_kernel(x.clone(), w.clone(), b, stride);
            prep.finish((x, w, stride), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::conv3x3_kernel(
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
            stride,
        )),
    }
}

/// Whether a tensor lives on the Flex CPU backend (with or without autodiff), where the kernels
/// run; elsewhere the functions below compose Burn's operations instead.
fn on_flex<const D: usize>(t: &Tensor<D>) -> bool {
    matches!(
        t.device().as_dispatch().clone().inner(),
        burn::backend::DispatchDevice::Flex(_)
    )
}

/// Which kernels run: all by default; `ELBO_KERNELS=off` none (Burn's compositions
/// everywhere), or a comma-separated list of those to use (`silu`, `softplus`, `gn`, `conv`), for measuring
/// each one's effect.
fn kernel_on(name: &str) -> bool {
    static ON: std::sync::OnceLock<Option<Vec<String>>> = std::sync::OnceLock::new();
    let on = ON.get_or_init(|| {
        std::env::var("ELBO_KERNELS")
            .ok()
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
    });
    match on {
        None => true,
        Some(list) => list.iter().any(|k| k == name),
    }
}

/// A 3×3 convolution with padding 1 and stride 1 or 2, or a 1×1 convolution, by the project's
/// kernel (forward, input and weight gradients as GEMMs per example on NCHW data, no layout
/// conversion); any other convolution, or a device other than Flex, goes to the module's own
/// `forward`.
pub fn conv2d(conv: &burn::nn::conv::Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [_, _, kh, kw] = conv.weight.dims();
    let three = (conv.stride == [1, 1] || conv.stride == [2, 2])
        && (kh, kw) == (3, 3)
        && conv.padding == burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1);
    let one = conv.stride == [1, 1]
        && (kh, kw) == (1, 1)
        && matches!(
            conv.padding,
            burn::nn::PaddingConfig2d::Valid | burn::nn::PaddingConfig2d::Explicit(0, 0, 0, 0)
        );
    let plain = (three || one) && conv.dilation == [1, 1] && conv.groups == 1;
    let [_, _, h, w] = x.dims();
    if !plain || h < 2 || w < 2 || !on_flex(&x) || !kernel_on("conv") {
        return conv.forward(x);
    }
    let dev = x.device();
    let cout = conv.weight.dims()[0];
    let bias = match &conv.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([cout], &dev),
    };
    Tensor::from_dispatch(<burn::backend::Dispatch as ElboKernels>::conv3x3_kernel(
        x.into_dispatch(),
        conv.weight.val().into_dispatch(),
        bias.into_dispatch(),
        conv.stride[0],
    ))
}

/// softplus(x) = log(1 + e^x) by the project's kernel (vectorised exp and log; backward σ(x)).
pub fn softplus<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !on_flex(&x) || !kernel_on("softplus") {
        return burn::tensor::activation::relu(x.clone()) + ((-x.abs()).exp() + 1.0).log();
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as ElboKernels>::softplus_kernel(
        x.into_dispatch(),
    ))
}

/// SiLU, x σ(x), by the project's kernel (vectorised exp; backward in one pass).
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !on_flex(&x) || !kernel_on("silu") {
        return burn::tensor::activation::silu(x);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as ElboKernels>::silu_kernel(
        x.into_dispatch(),
    ))
}

/// silu(norm(x + shift)) for x `[B, C, H, W]` and an optional per-(example, channel) shift
/// `[B, C]` (the time embedding of a residual block), with the GroupNorm module's γ, β, groups
/// and ε: one fused kernel forward and one backward.
pub fn group_norm_silu(norm: &GroupNorm, x: Tensor<4>, shift: Option<Tensor<2>>) -> Tensor<4> {
    let [b, c, _, _] = x.dims();
    let (gamma, beta) = match (&norm.gamma, &norm.beta) {
        (Some(g), Some(bt)) if norm.affine => (g.val(), bt.val()),
        _ => {
            let dev = x.device();
            (Tensor::ones([c], &dev), Tensor::zeros([c], &dev))
        }
    };
    if !on_flex(&x) || !kernel_on("gn") {
        let x = match shift {
            Some(s) => x + s.reshape([b, c, 1, 1]),
            None => x,
        };
        return burn::tensor::activation::silu(norm.forward(x));
    }
    let shift = shift.unwrap_or_else(|| Tensor::zeros([b, c], &x.device()));
    Tensor::from_dispatch(
        <burn::backend::Dispatch as ElboKernels>::group_norm_silu_kernel(
            x.into_dispatch(),
            shift.into_dispatch(),
            gamma.into_dispatch(),
            beta.into_dispatch(),
            norm.num_groups,
            norm.epsilon,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::GroupNormConfig;
    use burn::tensor::{Device, Distribution};

    fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    /// max |a − b| / (1 + |b|) over the elements.
    fn rel(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0, f32::max)
    }

    #[test]
    fn silu_kernel_matches_burn_in_value_and_gradient() {
        // Values and gradients within 2e-6 relative (the kernel's exp is within 2 ulps of the
        // libm one), from −90 to 90 including where e^{−x} would overflow.
        let d = Device::flex().autodiff();
        let xs: Vec<f32> = (0..4001).map(|i| -90.0 + i as f32 * 0.045).collect();
        let x = Tensor::<1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &d).require_grad();
        let w = Tensor::<1>::random([xs.len()], Distribution::Normal(0.0, 1.0), &d);
        let ours = silu(x.clone());
        let g1 = (ours.clone() * w.clone()).sum().backward();
        let theirs = burn::tensor::activation::silu(x.clone());
        let g2 = (theirs.clone() * w).sum().backward();
        assert!(rel(&vals(ours), &vals(theirs)) < 2e-6);
        let (a, b) = (vals(x.grad(&g1).unwrap()), vals(x.grad(&g2).unwrap()));
        assert!(rel(&a, &b) < 2e-6, "{}", rel(&a, &b));
    }

    #[test]
    fn softplus_kernel_matches_burn_in_value_and_gradient() {
        // Against the composition max(x, 0) + log(1 + e^{−|x|}) and its autodiff gradient σ(x),
        // from −90 to 90 (avoiding x = 0 exactly, where the composition's subgradient of max and
        // |·| gives 0 instead of σ(0) = 1/2): within 1e-6 relative to 1 + |value|.
        let d = Device::flex().autodiff();
        let xs: Vec<f32> = (0..4001).map(|i| -90.0137 + i as f32 * 0.045).collect();
        let x = Tensor::<1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &d).require_grad();
        let w = Tensor::<1>::random([xs.len()], Distribution::Normal(0.0, 1.0), &d);
        let ours = softplus(x.clone());
        let g1 = (ours.clone() * w.clone()).sum().backward();
        let theirs =
            burn::tensor::activation::relu(x.clone()) + ((-x.clone().abs()).exp() + 1.0).log();
        let g2 = (theirs.clone() * w).sum().backward();
        assert!(rel(&vals(ours), &vals(theirs)) < 1e-6);
        let (a, b) = (vals(x.grad(&g1).unwrap()), vals(x.grad(&g2).unwrap()));
        assert!(rel(&a, &b) < 1e-6, "{}", rel(&a, &b));
    }

    #[test]
    fn group_norm_silu_kernel_matches_burn_in_value_and_gradients() {
        // Against Burn's GroupNorm + broadcast add + SiLU on random inputs with a non-trivial
        // γ, β and shift: values within 1e-5 and every gradient (x, shift, γ, β) within 1e-4
        // relative to 1 + |value| (f32 sums over up to B·H·W = 400 terms in a different order).
        let d = Device::flex().autodiff();
        d.seed(7);
        let (b, c, h, w) = (4, 12, 10, 10);
        let mut norm = GroupNormConfig::new(4, c).init(&d);
        norm.gamma = Some(burn::module::Param::from_tensor(Tensor::<1>::random(
            [c],
            Distribution::Normal(1.0, 0.5),
            &d,
        )));
        norm.beta = Some(burn::module::Param::from_tensor(Tensor::<1>::random(
            [c],
            Distribution::Normal(0.0, 0.5),
            &d,
        )));
        let x =
            (Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.3, 2.0), &d)).require_grad();
        let s = Tensor::<2>::random([b, c], Distribution::Normal(0.0, 1.0), &d).require_grad();
        let up = Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.0, 1.0), &d);
        for with_shift in [true, false] {
            let shift = with_shift.then(|| s.clone());
            let ours = group_norm_silu(&norm, x.clone(), shift.clone());
            let g1 = (ours.clone() * up.clone()).sum().backward();
            let xin = match &shift {
                Some(s) => x.clone() + s.clone().reshape([b, c, 1, 1]),
                None => x.clone(),
            };
            let theirs = burn::tensor::activation::silu(norm.forward(xin));
            let g2 = (theirs.clone() * up.clone()).sum().backward();
            assert!(rel(&vals(ours), &vals(theirs)) < 1e-5);
            let gx = (vals(x.grad(&g1).unwrap()), vals(x.grad(&g2).unwrap()));
            assert!(rel(&gx.0, &gx.1) < 1e-4, "dx {}", rel(&gx.0, &gx.1));
            let gamma = norm.gamma.as_ref().unwrap().val();
            let beta = norm.beta.as_ref().unwrap().val();
            let gg = (
                vals(gamma.grad(&g1).unwrap()),
                vals(gamma.grad(&g2).unwrap()),
            );
            assert!(rel(&gg.0, &gg.1) < 1e-4, "dγ {}", rel(&gg.0, &gg.1));
            let gb = (vals(beta.grad(&g1).unwrap()), vals(beta.grad(&g2).unwrap()));
            assert!(rel(&gb.0, &gb.1) < 1e-4, "dβ {}", rel(&gb.0, &gb.1));
            if with_shift {
                let gs = (vals(s.grad(&g1).unwrap()), vals(s.grad(&g2).unwrap()));
                assert!(rel(&gs.0, &gs.1) < 1e-4, "dshift {}", rel(&gs.0, &gs.1));
            }
        }
    }

    #[test]
    fn conv3x3_kernel_matches_burn_in_value_and_gradients() {
        // Against Burn's Conv2d (3×3, padding 1, stride 1 and 2; and 1×1) on random inputs, with
        // shapes whose edges differ (7×5, odd sizes under stride 2) and one-channel input and
        // output: values and the gradients of x,
        // the weight and the bias within 1e-4 relative to 1 + |value| (sums of up to
        // B·H·W·Cin·9 = 3,780 products in a different order).
        use burn::nn::conv::Conv2dConfig;
        use burn::nn::PaddingConfig2d;
        let d = Device::flex().autodiff();
        d.seed(11);
        for &(b, cin, cout, h, w, st) in &[
            (3usize, 4usize, 6usize, 7usize, 5usize, 1usize),
            (2, 1, 3, 6, 6, 1),
            (2, 5, 1, 4, 9, 1),
            (2, 4, 4, 7, 8, 2),
            (3, 3, 5, 28, 28, 2),
            (2, 6, 4, 5, 7, 0), // stride 0 here: a 1×1 convolution
        ] {
            let conv = if st == 0 {
                Conv2dConfig::new([cin, cout], [1, 1]).init(&d)
            } else {
                Conv2dConfig::new([cin, cout], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_stride([st, st])
                    .init(&d)
            };
            let x = Tensor::<4>::random([b, cin, h, w], Distribution::Normal(0.0, 1.0), &d)
                .require_grad();
            let [_, _, ho, wo] = conv.forward(x.clone()).dims();
            let up = Tensor::<4>::random([b, cout, ho, wo], Distribution::Normal(0.0, 1.0), &d);
            let ours = conv2d(&conv, x.clone());
            let g1 = (ours.clone() * up.clone()).sum().backward();
            let theirs = conv.forward(x.clone());
            let g2 = (theirs.clone() * up.clone()).sum().backward();
            assert!(rel(&vals(ours), &vals(theirs)) < 1e-4);
            let gx = (vals(x.grad(&g1).unwrap()), vals(x.grad(&g2).unwrap()));
            assert!(rel(&gx.0, &gx.1) < 1e-4, "dx {}", rel(&gx.0, &gx.1));
            let wt = conv.weight.val();
            let gw = (vals(wt.grad(&g1).unwrap()), vals(wt.grad(&g2).unwrap()));
            assert!(rel(&gw.0, &gw.1) < 1e-4, "dW {}", rel(&gw.0, &gw.1));
            let bs = conv.bias.as_ref().unwrap().val();
            let gb = (vals(bs.grad(&g1).unwrap()), vals(bs.grad(&g2).unwrap()));
            assert!(rel(&gb.0, &gb.1) < 1e-4, "db {}", rel(&gb.0, &gb.1));
        }
    }
}
