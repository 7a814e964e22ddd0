//! Valid 2-D convolution, stride 1, NHWC, weights `[k, k, C_in, C_out]`: im2col + GEMM
//! over a chunk of samples stacked along the rows (single-threaded; the network
//! spreads chunks over cores).

use crate::nn::act::{backward_in_place, forward_in_place, keeps_preactivation};
use crate::nn::gemm::matmul;
use crate::nn::kernels::add_into;
use crate::nn::layer::{tensor, values, values_in, values_mut, Backward, Layer, Params};
use ndarray::{
    Array1, Array4, ArrayView2, ArrayView3, ArrayView4, ArrayViewD, ArrayViewMut2, ArrayViewMut3,
    ArrayViewMut4, ArrayViewMutD, Axis,
};
use spartan_core::spec::{ConvSpec, LayerSpec, Shape};

/// A convolution layer's configuration and parameters.
#[derive(Clone, Debug)]
pub struct Conv {
    spec: ConvSpec,
    input: Shape,
    output: Shape,
    /// `[k, k, C_in, C_out]`: as a `[k·k·C_in, C_out]` matrix, the GEMM's right operand.
    weight: Array4<f32>,
    /// `[C_out]`.
    bias: Array1<f32>,
}

/// Copies the `k×k×C` patch under every output pixel of one image `x` (`h × w × C`)
/// into a row of `cols` (`oh·ow × k·k·C`).
pub fn im2col(x: ArrayView3<'_, f32>, k: usize, cols: ArrayViewMut2<'_, f32>) {
    let (_, iw, c) = x.dim();
    let ow = iw + 1 - k;
    let (x, cols) = (values(&x), values_mut(cols));
    let row = k * c;
    let kkc = k * row;
    for (oy, rows) in cols.chunks_exact_mut(ow * kkc).enumerate() {
        for (ox, dst) in rows.chunks_exact_mut(kkc).enumerate() {
            for (ky, d) in dst.chunks_exact_mut(row).enumerate() {
                let src = ((oy + ky) * iw + ox) * c;
                d.copy_from_slice(&x[src..src + row]);
            }
        }
    }
}

/// Adjoint of [`im2col`]: scatters patch gradients back onto the image (overwrites `dx`).
pub fn col2im(dcols: ArrayView2<'_, f32>, k: usize, dx: ArrayViewMut3<'_, f32>) {
    let (_, iw, c) = dx.dim();
    let ow = iw + 1 - k;
    let (dcols, dx) = (values(&dcols), values_mut(dx));
    let row = k * c;
    let kkc = k * row;
    dx.fill(0.0);
    for (oy, rows) in dcols.chunks_exact(ow * kkc).enumerate() {
        for (ox, src) in rows.chunks_exact(kkc).enumerate() {
            for (ky, s) in src.chunks_exact(row).enumerate() {
                let dst = ((oy + ky) * iw + ox) * c;
                add_into(&mut dx[dst..dst + row], s);
            }
        }
    }
}

/// Adds each column of `rows` into `sums` (the bias gradient).
pub fn add_column_sums(rows: ArrayView2<'_, f32>, sums: &mut [f32]) {
    for row in values(&rows).chunks_exact(sums.len()) {
        for (s, v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
}

impl Conv {
    /// A layer with fresh or given parameters.
    pub fn new(spec: ConvSpec, input: Shape, output: Shape, mut params: Params<'_>) -> Self {
        let k = spec.kernel as usize;
        let (ci, co) = (input.channels as usize, spec.filters as usize);
        let weight = params.next(|init, rng| {
            init.sample(
                spec.activation,
                rng,
                k * k * ci * co,
                (k * k * ci, k * k * co),
            )
        });
        let bias = params.next(|_, _| vec![0.0; co]);
        Conv {
            spec,
            input,
            output,
            weight: tensor((k, k, ci, co), weight),
            bias: tensor(co, bias),
        }
    }

    /// The weights, `[k, k, C_in, C_out]`.
    pub fn weight(&self) -> ArrayView4<'_, f32> {
        self.weight.view()
    }

    /// Columns per patch: `k·k·C_in`.
    fn patch_len(&self) -> usize {
        let k = self.spec.kernel as usize;
        k * k * self.input.channels as usize
    }

    /// Output pixels per sample.
    fn pixels(&self) -> usize {
        self.output.height as usize * self.output.width as usize
    }

    /// Pre-activations kept per sample (steps only: ReLU needs just its output).
    fn pre_len(&self) -> usize {
        if keeps_preactivation(self.spec.activation) {
            self.output.len()
        } else {
            0
        }
    }

    /// The weights as the GEMM's `[k·k·C_in, C_out]` matrix.
    fn weight_matrix(&self) -> ArrayView2<'_, f32> {
        let (kkc, co) = (self.patch_len(), self.spec.filters as usize);
        ArrayView2::from_shape((kkc, co), values(&self.weight.view())).expect("weight shape")
    }
}

/// Splits a conv's scratch into its pre-activations and its patch matrix.
fn split_scratch<'s>(
    conv: &Conv,
    n: usize,
    scratch: &'s mut [f32],
) -> (&'s mut [f32], ArrayViewMut2<'s, f32>) {
    let (pre, cols) = scratch.split_at_mut(n * conv.pre_len());
    let rows = n * conv.pixels();
    let cols = ArrayViewMut2::from_shape(
        (rows, conv.patch_len()),
        &mut cols[..rows * conv.patch_len()],
    )
    .expect("scratch sized by scratch_len");
    (pre, cols)
}

/// An `n × h × w × c` batch viewed as the GEMM's `[n·h·w, c]` matrix.
fn rows_of(y: ArrayViewMut4<'_, f32>) -> ArrayViewMut2<'_, f32> {
    let (n, h, w, c) = y.dim();
    y.into_shape_with_order((n * h * w, c))
        .expect("layer views are in standard layout")
}

impl Layer for Conv {
    fn spec(&self) -> LayerSpec {
        LayerSpec::Conv(self.spec)
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

    fn scratch_len(&self) -> usize {
        self.pre_len() + self.pixels() * self.patch_len()
    }

    /// The patches stay in the scratch for `backward`; pre-activations too for steps.
    fn forward(&self, x: ArrayView4<'_, f32>, y: ArrayViewMut4<'_, f32>, scratch: &mut [f32]) {
        let n = x.dim().0;
        let k = self.spec.kernel as usize;
        let (pre, mut cols) = split_scratch(self, n, scratch);
        for (xs, c) in x
            .outer_iter()
            .zip(cols.axis_chunks_iter_mut(Axis(0), self.pixels()))
        {
            im2col(xs, k, c);
        }
        let mut y = rows_of(y);
        for mut px in y.rows_mut() {
            px.assign(&self.bias);
        }
        matmul(y.view_mut(), cols.view(), self.weight_matrix(), true);
        let keep = (!pre.is_empty()).then_some(pre);
        forward_in_place(self.spec.activation, values_mut(y), keep);
    }

    /// Writes the input gradient through the patch matrix (clobbering it).
    fn backward(&self, b: Backward<'_>) {
        let n = b.x.dim().0;
        let k = self.spec.kernel as usize;
        let (pre, mut cols) = split_scratch(self, n, b.scratch);
        let mut gy = rows_of(b.gy);
        let out = values(&b.y);
        backward_in_place(self.spec.activation, b.mode, pre, out, values_in(&mut gy));
        if let Some(grads) = b.grads {
            let (gw, gb) = grads.split_at_mut(self.weight.len());
            add_column_sums(gy.view(), gb);
            let gw = ArrayViewMut2::from_shape(self.weight_matrix().dim(), gw).expect("grad shape");
            matmul(gw, cols.t(), gy.view(), true);
        }
        if let Some(mut gx) = b.gx {
            matmul(cols.view_mut(), gy.view(), self.weight_matrix().t(), false);
            for (dc, g) in cols
                .axis_chunks_iter(Axis(0), self.pixels())
                .zip(gx.outer_iter_mut())
            {
                col2im(dc, k, g);
            }
        }
    }

    fn clone_box(&self) -> Box<dyn Layer> {
        Box::new(self.clone())
    }
}
