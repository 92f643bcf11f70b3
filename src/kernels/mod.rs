//! The project's own CPU kernels for the hot operations of its networks, registered through
//! Burn's backend-extension mechanism: a backend trait for each new primitive
//! ([`ElboKernels`]), its Flex implementation (the arithmetic is in [`cpu`]), its autodiff
//! backward, and a `Tensor` function that calls it ([`silu`], [`group_norm_silu`]). Models keep
//! their ordinary code; on a device other than Flex the functions fall back to Burn's own
//! composition of the same mathematics.
//!
//! | kernel | replaces | one pass each way |
//! | --- | --- | --- |
//! | [`silu`] | x · sigmoid(x) (3 ops, scalar `expf`) | vectorised exp |
//! | [`group_norm_silu`] | GroupNorm (about 10 ops) + time-embedding add + SiLU | statistics and output per (example, group) |

pub mod cpu;

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
    /// silu(GroupNorm(x + shift) γ + β) for x `[B, C, H, W]`, shift `[B, C]`, γ, β `[C]`.
    fn group_norm_silu_kernel(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
    ) -> FloatTensor<Self>;
}

/// The backward kernels the autodiff implementations call on the inner backend.
pub trait ElboKernelsBackward: Backend {
    fn silu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    /// (dx, dshift, dγ, dβ).
    #[allow(clippy::type_complexity)]
    fn group_norm_silu_backward(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        groups: usize,
        eps: f64,
    ) -> [FloatTensor<Self>; 4];
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

    fn group_norm_silu_kernel(
        x: FlexTensor,
        shift: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        groups: usize,
        eps: f64,
    ) -> FlexTensor {
        let (xv, shape) = values(&x);
        let s = gn_shape(&shape, groups, eps);
        let y = cpu::group_norm_silu_forward(
            &xv,
            &values(&shift).0,
            &values(&gamma).0,
            &values(&beta).0,
            s,
        );
        flex(y, shape)
    }
}

impl ElboKernelsBackward for Flex {
    fn silu_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let (xv, shape) = values(&x);
        flex(cpu::silu_backward(&xv, &values(&grad).0), shape)
    }

    fn group_norm_silu_backward(
        x: FlexTensor,
        shift: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        grad: FlexTensor,
        groups: usize,
        eps: f64,
    ) -> [FlexTensor; 4] {
        let (xv, shape) = values(&x);
        let s = gn_shape(&shape, groups, eps);
        let (dx, ds, dg, db) = cpu::group_norm_silu_backward(
            &xv,
            &values(&shift).0,
            &values(&gamma).0,
            &values(&beta).0,
            &values(&grad).0,
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
        #[derive(Debug)]
        struct SiluBackward;
        impl<B: Backend + ElboKernelsBackward> Backward<B, 1> for SiluBackward {
            type State = FloatTensor<B>;
            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let grad = grads.consume::<B>(&ops.node);
                let [parent] = ops.parents;
                if let Some(node) = parent {
                    grads.register::<B>(node.id, B::silu_backward(ops.state, grad));
                }
            }
        }
        match SiluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let input = x.into_primitive();
                let out = B::silu_kernel(input.clone());
                prep.finish(input, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::silu_kernel(x.into_primitive())),
        }
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
            type State = (
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                usize,
                f64,
            );
            fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
                let grad = grads.consume::<B>(&ops.node);
                let (x, shift, gamma, beta, groups, eps) = ops.state;
                let g = B::group_norm_silu_backward(x, shift, gamma, beta, grad, groups, eps);
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
                let out =
                    B::group_norm_silu_kernel(x.clone(), s.clone(), g.clone(), b.clone(), groups, eps);
                prep.finish((x, s, g, b, groups, eps), out)
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
}

/// Whether a tensor lives on the Flex CPU backend (with or without autodiff), where the kernels
/// run; elsewhere the functions below compose Burn's operations instead.
fn on_flex<const D: usize>(t: &Tensor<D>) -> bool {
    matches!(
        t.device().as_dispatch().clone().inner(),
        burn::backend::DispatchDevice::Flex(_)
    )
}

/// Whether the kernels are switched off (`ELBO_KERNELS=off`: Burn's compositions everywhere,
/// for comparisons).
fn kernels_off() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var("ELBO_KERNELS").is_ok_and(|v| v == "off"))
}

/// SiLU, x σ(x), by the project's kernel (vectorised exp; backward in one pass).
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !on_flex(&x) || kernels_off() {
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
    if !on_flex(&x) || kernels_off() {
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
    fn group_norm_silu_kernel_matches_burn_in_value_and_gradients() {
        // Against Burn's GroupNorm + broadcast add + SiLU on random inputs with a non-trivial
        // γ, β and shift: values within 1e-5 and every gradient (x, shift, γ, β) within 1e-4
        // relative to 1 + |value| (f32 sums over up to B·H·W = 400 terms in a different order).
        let d = Device::flex().autodiff();
        d.seed(7);
        let (b, c, h, w) = (4, 12, 10, 10);
        let mut norm = GroupNormConfig::new(4, c).init(&d);
        norm.gamma = Some(burn::module::Param::from_tensor(
            Tensor::<1>::random([c], Distribution::Normal(1.0, 0.5), &d),
        ));
        norm.beta = Some(burn::module::Param::from_tensor(
            Tensor::<1>::random([c], Distribution::Normal(0.0, 0.5), &d),
        ));
        let x = (Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.3, 2.0), &d))
            .require_grad();
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
            let gg = (vals(gamma.grad(&g1).unwrap()), vals(gamma.grad(&g2).unwrap()));
            assert!(rel(&gg.0, &gg.1) < 1e-4, "dγ {}", rel(&gg.0, &gg.1));
            let gb = (vals(beta.grad(&g1).unwrap()), vals(beta.grad(&g2).unwrap()));
            assert!(rel(&gb.0, &gb.1) < 1e-4, "dβ {}", rel(&gb.0, &gb.1));
            if with_shift {
                let gs = (vals(s.grad(&g1).unwrap()), vals(s.grad(&g2).unwrap()));
                assert!(rel(&gs.0, &gs.1) < 1e-4, "dshift {}", rel(&gs.0, &gs.1));
            }
        }
    }
}
