//! A small CNN classifier of images: three 3×3 convolutions (the last two with stride 2), a
//! feature layer, and the class logits, with one nonlinearity throughout. The project's quality
//! classifier (FD-classifier's features) and the noisy classifier of classifier guidance are
//! both this network, through the project's convolution kernel.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use super::Activation;
use crate::kernels::conv2d;

/// The CNN: `[B, C, H, W]` → (features `[B, F]`, logits `[B, K]`).
#[derive(Module, Debug)]
pub struct Cnn {
    c1: Conv2d,
    c2: Conv2d,
    c3: Conv2d,
    feat: Linear,
    out: Linear,
    #[module(skip)]
    act: Activation,
}

fn conv(cin: usize, cout: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

impl Cnn {
    /// `input` channels of `hw` images, convolutions of `widths` channels, `features` in the
    /// penultimate layer, `classes` logits.
    pub fn new(
        input: usize,
        hw: [usize; 2],
        widths: [usize; 3],
        features: usize,
        classes: usize,
        act: Activation,
        device: &Device,
    ) -> Self {
        let q = |x: usize| x.div_ceil(2).div_ceil(2);
        Cnn {
            c1: conv(input, widths[0], 1, device),
            c2: conv(widths[0], widths[1], 2, device),
            c3: conv(widths[1], widths[2], 2, device),
            feat: LinearConfig::new(widths[2] * q(hw[0]) * q(hw[1]), features).init(device),
            out: LinearConfig::new(features, classes).init(device),
            act,
        }
    }

    /// Features and logits of `x` `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let a = |t| self.act.apply(t);
        let h1 = a(conv2d(&self.c1, x));
        let h2 = a(conv2d(&self.c2, h1));
        let h3 = a(conv2d(&self.c3, h2));
        let f = self.act.apply(self.feat.forward(h3.flatten(1, 3)));
        let logits = self.out.forward(f.clone());
        (f, logits)
    }

    /// The device its weights are on.
    pub fn device(&self) -> Device {
        self.out.weight.val().device()
    }
}
