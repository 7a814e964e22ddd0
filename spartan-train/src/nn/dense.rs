//! Fully connected layer over the flattened (h, w, c) input; weights `[N_in, N_out]`.

use super::act::{backward_in_place, forward_in_place, GradMode};
use super::gemm::{matmul, Op, Threads};
use spartan_core::spec::DenseSpec;

/// A dense layer with its parameters and gradients.
#[derive(Clone, Debug)]
pub struct DenseLayer {
    /// Configuration.
    pub spec: DenseSpec,
    /// Input features.
    pub n_in: usize,
    /// `[N_in, N_out]`, row-major.
    pub weight: Vec<f32>,
    /// `[N_out]`.
    pub bias: Vec<f32>,
    /// Gradient with respect to `weight`.
    pub grad_weight: Vec<f32>,
    /// Gradient with respect to `bias`.
    pub grad_bias: Vec<f32>,
}

impl DenseLayer {
    /// A layer with the given parameters.
    pub fn new(spec: DenseSpec, n_in: usize, weight: Vec<f32>, bias: Vec<f32>) -> Self {
        let (gw, gb) = (vec![0.0; weight.len()], vec![0.0; bias.len()]);
        DenseLayer {
            spec,
            n_in,
            weight,
            bias,
            grad_weight: gw,
            grad_bias: gb,
        }
    }

    fn n_out(&self) -> usize {
        self.spec.units as usize
    }

    /// Forward pass of `n` samples.
    pub fn forward(&self, x: &[f32], n: usize, y: &mut [f32], pre: Option<&mut [f32]>) {
        let no = self.n_out();
        for row in y.chunks_mut(no) {
            row.copy_from_slice(&self.bias);
        }
        matmul(
            y,
            x,
            Op::N,
            &self.weight,
            Op::N,
            (n, self.n_in, no),
            true,
            Threads::Seq,
        );
        forward_in_place(self.spec.activation, y, pre);
    }

    /// Backward pass; `gy` is overwritten with the pre-activation gradient.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        x: &[f32],
        n: usize,
        pre: &[f32],
        y: &[f32],
        gy: &mut [f32],
        gx: Option<&mut [f32]>,
        mode: GradMode,
    ) {
        let no = self.n_out();
        backward_in_place(self.spec.activation, mode, pre, y, gy);
        self.grad_bias.fill(0.0);
        for row in gy.chunks(no) {
            for (b, g) in self.grad_bias.iter_mut().zip(row) {
                *b += g;
            }
        }
        matmul(
            &mut self.grad_weight,
            x,
            Op::T,
            gy,
            Op::N,
            (self.n_in, n, no),
            false,
            Threads::Seq,
        );
        if let Some(gx) = gx {
            matmul(
                gx,
                gy,
                Op::N,
                &self.weight,
                Op::T,
                (n, no, self.n_in),
                false,
                Threads::Seq,
            );
        }
    }
}
