//! Fully connected layer over the flattened (h, w, c) input; weights `[N_in, N_out]`.

use super::act::{backward_in_place, forward_in_place, GradMode};
use super::conv::add_column_sums;
use super::gemm::{matmul, Op};
use spartan_core::spec::DenseSpec;

/// A dense layer's configuration and parameters.
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
}

impl DenseLayer {
    /// A layer with the given parameters.
    pub fn new(spec: DenseSpec, n_in: usize, weight: Vec<f32>, bias: Vec<f32>) -> Self {
        DenseLayer {
            spec,
            n_in,
            weight,
            bias,
        }
    }

    fn n_out(&self) -> usize {
        self.spec.units as usize
    }

    /// Forward pass of `n` samples.
    pub fn forward(&self, x: &[f32], n: usize, y: &mut [f32], pre: Option<&mut [f32]>) {
        let no = self.n_out();
        let y = &mut y[..n * no];
        for row in y.chunks_exact_mut(no) {
            row.copy_from_slice(&self.bias);
        }
        matmul(
            y,
            &x[..n * self.n_in],
            Op::N,
            &self.weight,
            Op::N,
            (n, self.n_in, no),
            true,
        );
        forward_in_place(self.spec.activation, y, pre.map(|p| &mut p[..n * no]));
    }

    /// Backward pass; `gy` is overwritten with the pre-activation gradient and the
    /// parameter gradients are *added* to `param_grads` when given.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        x: &[f32],
        n: usize,
        pre: &[f32],
        y: &[f32],
        gy: &mut [f32],
        gx: Option<&mut [f32]>,
        mode: GradMode,
        param_grads: Option<(&mut [f32], &mut [f32])>,
    ) {
        let no = self.n_out();
        let gy = &mut gy[..n * no];
        backward_in_place(self.spec.activation, mode, pre, &y[..n * no], gy);
        if let Some((gw, gb)) = param_grads {
            add_column_sums(gy, gb);
            matmul(
                gw,
                &x[..n * self.n_in],
                Op::T,
                gy,
                Op::N,
                (self.n_in, n, no),
                true,
            );
        }
        if let Some(gx) = gx {
            matmul(
                &mut gx[..n * self.n_in],
                gy,
                Op::N,
                &self.weight,
                Op::T,
                (n, no, self.n_in),
                false,
            );
        }
    }
}
