//! Conv-Filtering (layer 1): a 1×1 convolution of the `C` input channels into β step
//! units, `y_k = f(Σ_c w_kc x_c + b_k)`, with an L1 penalty on its output
//! (docs/maths.md, filtering layers).
//!
//! The forward maths comes from `spartan-core` (`conv_filter_preactivation`, the
//! activation), so the trainer, the float path and the bit tables agree bit for bit.

use crate::nn::act::{backward_in_place, forward_in_place};
use crate::nn::init::Init;
use crate::nn::kernels::{add_unit_filter_grads, unit_filter_preactivations};
use crate::nn::layer::{tensor, values, values_in, values_mut, Backward, Forward, Layer};
use ndarray::ArrayD;
use rand::{Rng, RngCore};
use spartan_core::filter::{conv_filter_preactivation, initial_step_bias, FilterSpec};
use spartan_core::spec::Shape;

/// A Conv-Filtering layer: weights `[C, β]`, biases `[β]`.
#[derive(Clone, Debug)]
pub struct ConvFilter {
    pub(super) spec: FilterSpec,
    pub(super) input: Shape,
}

impl ConvFilter {
    /// Adds the parameter gradients from the pre-activation gradients `dz`, pixel
    /// after pixel (any channel count).
    fn add_grads(&self, xs: &[f32], dz: &[f32], gw: &mut [f32], gb: &mut [f32]) {
        let (c, beta) = (self.input.channels as usize, self.spec.beta as usize);
        for (px, dzp) in xs.chunks_exact(c).zip(dz.chunks_exact(beta)) {
            for (k, &g) in dzp.iter().enumerate() {
                gb[k] += g;
                for (ch, &xv) in px.iter().enumerate() {
                    gw[ch * beta + k] += g * xv;
                }
            }
        }
    }
}

impl Layer for ConvFilter {
    /// `w = 1`, `b_k = -(k+1)/(β+1)` (evenly spread thresholds) for steps;
    /// `w ~ U(1, 1.5)`, `b ~ U(0.05, 0.5)` for cosines.
    fn init(&self, _: Init, rng: &mut dyn RngCore) -> Vec<ArrayD<f32>> {
        let (c, beta) = (self.input.channels as usize, self.spec.beta as usize);
        let (weight, bias) = if self.spec.activation.is_cosine() {
            let w = (0..c * beta).map(|_| rng.random_range(1.0..1.5)).collect();
            (w, (0..beta).map(|_| rng.random_range(0.05..0.5)).collect())
        } else {
            let b = (0..beta).map(|k| initial_step_bias(k, beta)).collect();
            (vec![1.0; c * beta], b)
        };
        vec![tensor(&[c, beta], weight), tensor(&[beta], bias)]
    }

    /// Pre-activations (steps need them): `h·w·β`.
    fn scratch_len(&self) -> usize {
        let (i, beta) = (self.input, self.spec.beta as usize);
        i.height as usize * i.width as usize * beta
    }

    fn forward(
        &self,
        p: &[ArrayD<f32>],
        Forward {
            x, y, scratch: pre, ..
        }: Forward<'_>,
    ) {
        let c = self.input.channels as usize;
        let beta = self.spec.beta as usize;
        let act = self.spec.activation;
        let (w, b) = (values(&p[0].view()), values(&p[1].view()));
        let (x, y) = (values(&x), values_mut(y));
        if c == 1 {
            // Vectorised; the same expression as below.
            unit_filter_preactivations(x, w, b, y);
        } else {
            for (px, zs) in x.chunks_exact(c).zip(y.chunks_exact_mut(beta)) {
                for (k, z) in zs.iter_mut().enumerate() {
                    *z = conv_filter_preactivation(|ch| w[ch * beta + k], b[k], px);
                }
            }
        }
        // The steps over the whole layer at once: vectorised, the same 0/1 as the core
        // (a libm `cosf` per value was 7 % of candidate-c's training step).
        forward_in_place(act, y, Some(&mut pre[..y.len()]));
    }

    fn backward(&self, p: &[ArrayD<f32>], b: Backward<'_>) {
        let c = self.input.channels as usize;
        let beta = self.spec.beta as usize;
        let w = values(&p[0].view());
        let mut gy = b.gy;
        let dz = values_in(&mut gy);
        backward_in_place(self.spec.activation, b.mode, b.scratch, values(&b.y), dz);
        let dz: &[f32] = dz;
        if let Some(grads) = b.grads {
            let (gw, gb) = grads.split_at_mut(w.len());
            if c == 1 {
                add_unit_filter_grads(values(&b.x), dz, gw, gb);
            } else {
                self.add_grads(values(&b.x), dz, gw, gb);
            }
        }
        if let Some(gx) = b.gx {
            for (gpx, dzp) in values_mut(gx)
                .chunks_exact_mut(c)
                .zip(dz.chunks_exact(beta))
            {
                for (ch, g) in gpx.iter_mut().enumerate() {
                    *g = (0..beta).map(|k| dzp[k] * w[ch * beta + k]).sum();
                }
            }
        }
    }

    fn activity_l1(&self) -> f32 {
        self.spec.sf
    }
}
