//! The network as the verifier sees it: the layers after the filter, in `f64`, each
//! with the constants that bound its `f32` rounding.
//!
//! A dense layer reads its input flattened in (h, w, c) order with weights
//! `[h·w·c, units]`: that is a convolution whose kernel covers the whole input, so
//! convolutions and dense layers share one [`Affine`] here.

use super::CertifyError;
use spartan_core::activation::Activation;
use spartan_core::codes::{element_units, Unit, MAX_UNITS};
use spartan_core::filter::FilterKind;
use spartan_core::float::F32Model;
use spartan_core::spec::{LayerSpec, Shape};

/// Height, width and channels of a tensor (NHWC without the batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dims {
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Dims {
    pub fn len(&self) -> usize {
        self.h * self.w * self.c
    }

    fn of(s: Shape) -> Self {
        Dims {
            h: s.height as usize,
            w: s.width as usize,
            c: s.channels as usize,
        }
    }
}

/// Unit roundoff of `f32` (round to nearest).
const F32_UNIT: f64 = 1.0 / 16_777_216.0;
/// Largest absolute error of one `f32` operation whose result is subnormal or zero.
const F32_SUBNORMAL_STEP: f64 = 1.401_298_464_324_817e-45;

/// A convolution (valid padding, stride 1) or a dense layer, then its activation.
pub(crate) struct Affine {
    pub input: Dims,
    pub output: Dims,
    pub kh: usize,
    pub kw: usize,
    /// `[kh, kw, c_in, c_out]`.
    pub weight: Vec<f64>,
    /// `|weight|`.
    pub abs_weight: Vec<f64>,
    pub bias: Vec<f64>,
    pub act: Activation,
    /// Rounding of one output: `|fl(b + Σ w·y) − (b + Σ w·y)| ≤ gamma·(|b| + Σ|w·y|) + tiny`.
    pub gamma: f64,
    pub tiny: f64,
}

impl Affine {
    fn new(
        input: Dims,
        output: Dims,
        (kh, kw): (usize, usize),
        weight: Vec<f64>,
        bias: Vec<f64>,
        act: Activation,
    ) -> Self {
        // Sum of n products and a bias, in any order, with or without fused
        // multiply-adds: at most n + 1 roundings of relative size u each, so the error
        // is at most γ_{n+1} = (n+1)u / (1 − (n+1)u) times the sum of magnitudes
        // (Higham, Accuracy and Stability of Numerical Algorithms, §3.1), plus one
        // subnormal step per operation where results underflow. Both are doubled: the
        // second half covers the verifier's own f64 rounding (see docs/certify.md).
        let n = (kh * kw * input.c + 1) as f64;
        let gamma = 2.0 * (n * F32_UNIT) / (1.0 - n * F32_UNIT);
        let tiny = 2.0 * 2.0 * n * F32_SUBNORMAL_STEP;
        Affine {
            input,
            output,
            kh,
            kw,
            abs_weight: weight.iter().map(|w| w.abs()).collect(),
            weight,
            bias,
            act,
            gamma,
            tiny,
        }
    }
}

/// Non-overlapping max pooling.
pub(crate) struct Pool {
    pub input: Dims,
    pub output: Dims,
    pub size: usize,
}

/// One layer after the filter.
pub(crate) enum Op {
    Affine(Affine),
    Pool(Pool),
}

impl Op {
    pub fn output(&self) -> Dims {
        match self {
            Op::Affine(a) => a.output,
            Op::Pool(p) => p.output,
        }
    }
}

/// What the first [`Op`] reads.
pub(crate) enum Front {
    /// No filter: the pixels themselves.
    Raw,
    /// A filtering layer: each input element becomes the `beta` bits of its code,
    /// stored at outputs `element·beta ..` (both filter kinds, one input channel for
    /// Conv-Filtering).
    Filter {
        beta: usize,
        /// The units of each input element, in code-bit order.
        units: Vec<heapless::Vec<Unit, MAX_UNITS>>,
    },
}

/// The verifier's copy of a float model.
pub(crate) struct Net {
    pub input: Dims,
    pub front: Front,
    pub ops: Vec<Op>,
}

impl Net {
    pub fn from_model(model: &F32Model<'_>) -> Result<Self, CertifyError> {
        let spec = model.spec();
        let shapes = model.shapes();
        let mut ops = Vec::new();
        let mut front = Front::Raw;
        for (i, layer) in spec.layers.iter().enumerate() {
            let (input, output) = (Dims::of(shapes[i]), Dims::of(shapes[i + 1]));
            let w = model
                .layer_weights(i)
                .ok_or(CertifyError::Model("a layer has no weights"))?;
            let f64s = |s: spartan_core::float::F32Slice<'_>| -> Vec<f64> {
                s.iter().map(f64::from).collect()
            };
            match *layer {
                LayerSpec::Filter(f) => {
                    if f.kind == FilterKind::Conv && input.c != 1 {
                        return Err(CertifyError::Unsupported(
                            "Conv-Filtering of several input channels mixes them: its codes are not per element",
                        ));
                    }
                    let weight: Vec<f32> = w.weight.iter().collect();
                    let bias: Vec<f32> = w.bias.iter().collect();
                    let units = (0..input.len())
                        .map(|e| element_units(&f, &weight, &bias, input.c, e))
                        .collect::<Option<Vec<_>>>()
                        .ok_or(CertifyError::Unsupported(
                            "a filter of more than 32 units per element",
                        ))?;
                    front = Front::Filter {
                        beta: f.beta as usize,
                        units,
                    };
                }
                LayerSpec::Conv(c) => {
                    let k = c.kernel as usize;
                    ops.push(Op::Affine(Affine::new(
                        input,
                        output,
                        (k, k),
                        f64s(w.weight),
                        f64s(w.bias),
                        c.activation,
                    )));
                }
                LayerSpec::Dense(d) => ops.push(Op::Affine(Affine::new(
                    input,
                    output,
                    (input.h, input.w),
                    f64s(w.weight),
                    f64s(w.bias),
                    d.activation,
                ))),
                LayerSpec::MaxPool(p) => ops.push(Op::Pool(Pool {
                    input,
                    output,
                    size: p.size as usize,
                })),
            }
        }
        Ok(Net {
            input: Dims::of(shapes[0]),
            front,
            ops,
        })
    }

    /// Input elements per image row (width × channels).
    pub fn input_width(&self) -> usize {
        self.input.w * self.input.c
    }

    /// Elements per input element after the filter (β, or 1 without one).
    pub fn width(&self) -> usize {
        match &self.front {
            Front::Raw => 1,
            Front::Filter { beta, .. } => *beta,
        }
    }
}
