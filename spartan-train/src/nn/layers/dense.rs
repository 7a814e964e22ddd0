//! Fully connected layer over the flattened (h, w, c) input; weights `[N_in, N_out]`.

use super::affine::{Affine, AffineBackward};
use crate::nn::act::keeps_preactivation;
use crate::nn::init::Init;
use crate::nn::layer::{tensor, values, values_mut, Backward, Forward, Layer};
use ndarray::{ArrayD, ArrayView2, ArrayView4, ArrayViewMut2, ArrayViewMut4, Dimension};
use rand::RngCore;
use spartan_core::spec::{DenseSpec, Shape};

/// A dense layer: weights `[N_in, N_out]`, biases `[N_out]`.
#[derive(Clone, Debug)]
pub struct Dense {
    pub(super) spec: DenseSpec,
    pub(super) input: Shape,
}

/// A batch as the `[n, h·w·c]` matrix of its flattened samples.
fn flat(x: ArrayView4<'_, f32>) -> ArrayView2<'_, f32> {
    let n = x.dim().0;
    let len = x.len() / n.max(1);
    ArrayView2::from_shape((n, len), values(&x)).expect("layer views are in standard layout")
}

/// A writable batch as the `[n, h·w·c]` matrix of its flattened samples.
fn flat_mut(x: ArrayViewMut4<'_, f32>) -> ArrayViewMut2<'_, f32> {
    let n = x.dim().0;
    let len = x.raw_dim().size() / n.max(1);
    ArrayViewMut2::from_shape((n, len), values_mut(x)).expect("layer views are in standard layout")
}

impl Dense {
    /// `y = f(x·W + b)` over the flattened samples.
    fn affine<'p>(&self, p: &'p [ArrayD<f32>]) -> Affine<'p> {
        let dim = (self.input.len(), self.spec.units as usize);
        Affine {
            w: ArrayView2::from_shape(dim, values(&p[0].view())).expect("weight shape"),
            b: &p[1],
            act: self.spec.activation,
        }
    }
}

impl Layer for Dense {
    fn init(&self, init: Init, rng: &mut dyn RngCore) -> Vec<ArrayD<f32>> {
        let (ni, no) = (self.input.len(), self.spec.units as usize);
        let weight = init.sample(self.spec.activation, rng, ni * no, (ni, no));
        vec![tensor(&[ni, no], weight), ArrayD::zeros(vec![no])]
    }

    fn scratch_len(&self) -> usize {
        if keeps_preactivation(self.spec.activation) {
            self.spec.units as usize
        } else {
            0
        }
    }

    fn forward(&self, p: &[ArrayD<f32>], Forward { x, y, scratch, .. }: Forward<'_>) {
        self.affine(p).forward(flat(x), flat_mut(y), scratch);
    }

    fn backward(&self, p: &[ArrayD<f32>], b: Backward<'_>) {
        let affine = self.affine(p);
        let pass = AffineBackward {
            a: Some(flat(b.x)),
            pre: b.scratch,
            y: values(&b.y),
            gy: flat_mut(b.gy),
            mode: b.mode,
        };
        let gz = affine.backward(pass, b.grads);
        if let Some(gx) = b.gx {
            affine.input_grad(gz.view(), flat_mut(gx));
        }
    }
}
