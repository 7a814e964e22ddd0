//! Fully connected layer over the flattened (h, w, c) input; weights `[N_in, N_out]`.

use super::conv::add_column_sums;
use crate::nn::act::{backward_in_place, forward_in_place, keeps_preactivation};
use crate::nn::gemm::matmul;
use crate::nn::layer::{tensor, values, values_in, values_mut, Backward, Layer, Params};
use ndarray::{
    Array1, Array2, ArrayView2, ArrayView4, ArrayViewD, ArrayViewMut2, ArrayViewMut4,
    ArrayViewMutD, Dimension,
};
use spartan_core::spec::{DenseSpec, LayerSpec, Shape};

/// A dense layer's configuration and parameters.
#[derive(Clone, Debug)]
pub struct Dense {
    spec: DenseSpec,
    input: Shape,
    /// `[N_in, N_out]`.
    weight: Array2<f32>,
    /// `[N_out]`.
    bias: Array1<f32>,
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
    /// A layer with fresh or given parameters.
    pub fn new(spec: DenseSpec, input: Shape, mut params: Params<'_>) -> Self {
        let (ni, no) = (input.len(), spec.units as usize);
        let weight = params.next(|init, rng| init.sample(spec.activation, rng, ni * no, (ni, no)));
        let bias = params.next(|_, _| vec![0.0; no]);
        Dense {
            spec,
            input,
            weight: tensor((ni, no), weight),
            bias: tensor(no, bias),
        }
    }

    /// The weights, `[N_in, N_out]`.
    pub fn weight(&self) -> ArrayView2<'_, f32> {
        self.weight.view()
    }
}

impl Layer for Dense {
    fn spec(&self) -> LayerSpec {
        LayerSpec::Dense(self.spec)
    }

    fn input_shape(&self) -> Shape {
        self.input
    }

    fn output_shape(&self) -> Shape {
        Shape::new(1, 1, self.spec.units)
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

    fn scratch_len(&self) -> usize {
        if keeps_preactivation(self.spec.activation) {
            self.spec.units as usize
        } else {
            0
        }
    }

    fn forward(&self, x: ArrayView4<'_, f32>, y: ArrayViewMut4<'_, f32>, scratch: &mut [f32]) {
        let mut y = flat_mut(y);
        for mut row in y.rows_mut() {
            row.assign(&self.bias);
        }
        matmul(y.view_mut(), flat(x), self.weight.view(), true);
        let keep = (!scratch.is_empty()).then_some(scratch);
        forward_in_place(self.spec.activation, values_mut(y), keep);
    }

    fn backward(&self, b: Backward<'_>) {
        let x = flat(b.x);
        let mut gy = flat_mut(b.gy);
        let out = values(&b.y);
        let g = values_in(&mut gy);
        backward_in_place(self.spec.activation, b.mode, b.scratch, out, g);
        if let Some(grads) = b.grads {
            let (gw, gb) = grads.split_at_mut(self.weight.len());
            add_column_sums(gy.view(), gb);
            let gw = ArrayViewMut2::from_shape(self.weight.dim(), gw).expect("grad shape");
            matmul(gw, x.t(), gy.view(), true);
        }
        if let Some(gx) = b.gx {
            matmul(flat_mut(gx), gy.view(), self.weight.t(), false);
        }
    }

    fn clone_box(&self) -> Box<dyn Layer> {
        Box::new(self.clone())
    }
}
