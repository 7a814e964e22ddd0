//! Conv-Filtering (layer 1): a 1×1 convolution of the `C` input channels into β step
//! units, `y_k = f(Σ_c w_kc x_c + b_k)`, with an L1 penalty on its output
//! (docs/maths.md, filtering layers).
//!
//! The forward maths comes from `spartan-core` (`conv_filter_preactivation`, the
//! activation), so the trainer, the float path and the bit tables agree bit for bit.

use crate::nn::act::backward_in_place;
use crate::nn::layer::{tensor, values, values_in, values_mut, Backward, Layer, Params};
use ndarray::{Array1, Array2, ArrayView2, ArrayView4, ArrayViewD, ArrayViewMut4, ArrayViewMutD};
use rand::Rng;
use spartan_core::filter::{conv_filter_preactivation, initial_step_bias, FilterKind, FilterSpec};
use spartan_core::spec::{LayerSpec, Shape};

/// A Conv-Filtering layer's configuration and parameters.
#[derive(Clone, Debug)]
pub struct ConvFilter {
    spec: FilterSpec,
    input: Shape,
    output: Shape,
    /// `[C, β]`.
    weight: Array2<f32>,
    /// `[β]`.
    bias: Array1<f32>,
}

impl ConvFilter {
    /// A layer with fresh or given parameters. Fresh: `w = 1`, `b_k = -(k+1)/(β+1)`
    /// (evenly spread thresholds) for steps; `w ~ U(1, 1.5)`, `b ~ U(0.05, 0.5)` for
    /// cosines.
    pub fn new(spec: FilterSpec, input: Shape, output: Shape, mut params: Params<'_>) -> Self {
        debug_assert_eq!(spec.kind, FilterKind::Conv);
        let (c, beta) = (input.channels as usize, spec.beta as usize);
        let cosine = spec.activation.is_cosine();
        let weight = params.next(|_, rng| {
            if cosine {
                (0..c * beta).map(|_| rng.random_range(1.0..1.5)).collect()
            } else {
                vec![1.0; c * beta]
            }
        });
        let bias = params.next(|_, rng| {
            if cosine {
                (0..beta).map(|_| rng.random_range(0.05..0.5)).collect()
            } else {
                (0..beta).map(|k| initial_step_bias(k, beta)).collect()
            }
        });
        ConvFilter {
            spec,
            input,
            output,
            weight: tensor((c, beta), weight),
            bias: tensor(beta, bias),
        }
    }

    /// The weights, `[C, β]`.
    pub fn weight(&self) -> ArrayView2<'_, f32> {
        self.weight.view()
    }
}

impl Layer for ConvFilter {
    fn spec(&self) -> LayerSpec {
        LayerSpec::Filter(self.spec)
    }

    fn input_shape(&self) -> Shape {
        self.input
    }

    fn output_shape(&self) -> Shape {
        self.output
    }

    fn params(&self) -> Vec<ArrayViewD<'_, f32>> {
        vec![self.weight.view().into_dyn(), self.bias.view().into_dyn()]
    }

    fn params_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        vec![
            self.weight.view_mut().into_dyn(),
            self.bias.view_mut().into_dyn(),
        ]
    }

    /// Pre-activations (steps need them).
    fn scratch_len(&self) -> usize {
        self.output.len()
    }

    fn forward(&self, x: ArrayView4<'_, f32>, y: ArrayViewMut4<'_, f32>, pre: &mut [f32]) {
        let c = self.input.channels as usize;
        let beta = self.spec.beta as usize;
        let act = self.spec.activation;
        let (w, b) = (values(&self.weight.view()), values(&self.bias.view()));
        let pixels = values(&x)
            .chunks_exact(c)
            .zip(pre.chunks_exact_mut(beta))
            .zip(values_mut(y).chunks_exact_mut(beta));
        for ((px, zs), yv) in pixels {
            for k in 0..beta {
                zs[k] = conv_filter_preactivation(|ch| w[ch * beta + k], b[k], px);
                yv[k] = act.forward(zs[k]);
            }
        }
    }

    fn backward(&self, b: Backward<'_>) {
        let c = self.input.channels as usize;
        let beta = self.spec.beta as usize;
        let mut gy = b.gy;
        let dz = values_in(&mut gy);
        backward_in_place(self.spec.activation, b.mode, b.scratch, values(&b.y), dz);
        let dz: &[f32] = dz;
        if let Some(grads) = b.grads {
            let (gw, gb) = grads.split_at_mut(self.weight.len());
            for (px, dzp) in values(&b.x).chunks_exact(c).zip(dz.chunks_exact(beta)) {
                for (k, &g) in dzp.iter().enumerate() {
                    gb[k] += g;
                    for (ch, &xv) in px.iter().enumerate() {
                        gw[ch * beta + k] += g * xv;
                    }
                }
            }
        }
        if let Some(gx) = b.gx {
            let w = values(&self.weight.view());
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

    fn clone_box(&self) -> Box<dyn Layer> {
        Box::new(self.clone())
    }
}
