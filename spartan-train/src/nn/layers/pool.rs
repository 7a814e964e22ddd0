//! Non-overlapping max pooling (window = stride, floor), NHWC.

use crate::nn::kernels::{max_pool_backward_sample, max_pool_sample, PoolGeometry};
use crate::nn::layer::{values, values_mut, Backward, Forward, Layer};
use ndarray::ArrayD;
use spartan_core::spec::{PoolSpec, Shape};

/// A max-pooling layer (no parameters).
#[derive(Clone, Debug)]
pub struct MaxPool {
    pub(super) spec: PoolSpec,
    pub(super) input: Shape,
    pub(super) output: Shape,
}

impl MaxPool {
    fn geometry(&self) -> PoolGeometry {
        PoolGeometry {
            in_width: self.input.width as usize,
            channels: self.input.channels as usize,
            out_height: self.output.height as usize,
            out_width: self.output.width as usize,
            size: self.spec.size as usize,
        }
    }
}

impl Layer for MaxPool {
    fn forward(&self, _: &[ArrayD<f32>], Forward { x, y, .. }: Forward<'_>) {
        let g = self.geometry();
        let (x, y) = (values(&x), values_mut(y));
        for (xs, ys) in x
            .chunks_exact(self.input.len())
            .zip(y.chunks_exact_mut(self.output.len()))
        {
            max_pool_sample(xs, g, ys);
        }
    }

    /// Each output gradient goes to the first input that holds the window's maximum
    /// (the same tie rule as the forward `>` comparison).
    fn backward(&self, _: &[ArrayD<f32>], b: Backward<'_>) {
        let Some(gx) = b.gx else {
            return;
        };
        let g = self.geometry();
        let (il, ol) = (self.input.len(), self.output.len());
        let gx = values_mut(gx);
        gx.fill(0.0);
        let samples = values(&b.x)
            .chunks_exact(il)
            .zip(values(&b.y).chunks_exact(ol))
            .zip(values(&b.gy.view()).chunks_exact(ol))
            .zip(gx.chunks_exact_mut(il));
        for (((xs, ys), gys), gxs) in samples {
            max_pool_backward_sample(xs, ys, gys, g, gxs);
        }
    }
}
