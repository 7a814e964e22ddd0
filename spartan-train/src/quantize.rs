//! Post-training quantisation: an f32 network and calibration images in, an int8 model
//! file (same container, kind int8) out. The integer semantics live in
//! `spartan_core::int8`; this module only chooses the numbers.
//!
//! - Layer 1 becomes exact bit tables over raw pixels (`BitTable::compile`, the float
//!   expression itself), or per-unit thresholds when every unit is monotone.
//! - Weights: per-output-channel symmetric `i8` (`s_w = max|w| / 127`); biases `i32`
//!   in units of `s_in · s_w`.
//! - Activations: per-tensor `u8` with a zero point from the calibrated min/max
//!   (logits: `i8`); ReLU clamps at the zero point; steps become exact 0/1 maps.
//! - Rescaling: `s_in · s_w / s_out` as a fixed-point multiplier and shift.

use crate::nn::Network;
use ndarray::{ArrayView4, ArrayViewD};
use spartan_core::activation::Activation;
use spartan_core::filter::{BitTable, FilterKind};
use spartan_core::format::{self, DType, ModelBody, ModelKind, TensorRef};
use spartan_core::int8::NEVER_ON;
use spartan_core::quant::{phase_factor, Requant};
use spartan_core::spec::LayerSpec;

/// Quantisation of the activation flowing between two layers.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ActQuant {
    /// Real value of one step.
    scale: f64,
    /// Integer that means 0.0.
    zero_point: i32,
}

/// Raw pixels: `x = p / 255`.
const PIXELS: ActQuant = ActQuant {
    scale: 1.0 / 255.0,
    zero_point: 0,
};

/// Binary maps: exactly 0 or 1.
const BINARY: ActQuant = ActQuant {
    scale: 1.0,
    zero_point: 0,
};

/// Per-tensor quantisation of a calibrated range, onto `[lo, hi]` integers.
fn act_quant(min: f32, max: f32, lo: i32, hi: i32) -> ActQuant {
    let min = f64::from(min.min(0.0));
    let max = f64::from(max.max(0.0));
    let span = (max - min).max(1e-8);
    let scale = span / f64::from(hi - lo);
    let zero_point = (f64::from(lo) - min / scale)
        .round()
        .clamp(f64::from(lo), f64::from(hi)) as i32;
    ActQuant { scale, zero_point }
}

/// Owned tensors of the file being built.
#[derive(Default)]
struct Tensors(Vec<(DType, Vec<u32>, Vec<u8>)>);

impl Tensors {
    fn push(&mut self, dtype: DType, dims: &[u32], bytes: Vec<u8>) {
        self.0.push((dtype, dims.to_vec(), bytes));
    }

    fn i32s(&mut self, dims: &[u32], values: impl IntoIterator<Item = i32>) {
        let bytes = values.into_iter().flat_map(i32::to_le_bytes).collect();
        self.push(DType::I32, dims, bytes);
    }
}

/// A conv or dense layer's float parameters: weights `[…, C_out]` (the output channel
/// fastest, as the file stores them) and biases `[C_out]`.
struct Linear<'a> {
    weight: ArrayViewD<'a, f32>,
    bias: ArrayViewD<'a, f32>,
    activation: Activation,
}

/// Quantises a conv or dense layer. Returns the output activation quantisation.
fn quantize_linear(
    out: &mut Tensors,
    layer: Linear<'_>,
    input: ActQuant,
    range: (f32, f32),
    is_last: bool,
) -> ActQuant {
    let Linear {
        weight,
        bias,
        activation,
    } = layer;
    let dims: Vec<u32> = weight.shape().iter().map(|&d| d as u32).collect();
    let channels = bias.len();
    let scales: Vec<f64> = (0..channels)
        .map(|c| {
            let m = weight
                .iter()
                .skip(c)
                .step_by(channels)
                .fold(0.0f32, |m, w| m.max(w.abs()));
            if m > 0.0 {
                f64::from(m) / 127.0
            } else {
                1.0
            }
        })
        .collect();
    let qw: Vec<u8> = weight
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            (f64::from(w) / scales[i % channels])
                .round()
                .clamp(-127.0, 127.0) as i8 as u8
        })
        .collect();
    out.push(DType::I8, &dims, qw);
    let acc_scale: Vec<f64> = scales.iter().map(|s| s * input.scale).collect();
    out.i32s(
        &[channels as u32],
        bias.iter()
            .zip(&acc_scale)
            .map(|(&b, s)| (f64::from(b) / s).round().clamp(-1e9, 1e9) as i32),
    );
    let (output, params): (ActQuant, Vec<i32>) = if activation.is_binary() {
        let params = if activation.is_cosine() {
            acc_scale
                .iter()
                .flat_map(|&s| {
                    let f = phase_factor(s);
                    [f as u32 as i32, (f >> 32) as i32]
                })
                .collect()
        } else {
            vec![0; 2 * channels]
        };
        (BINARY, params)
    } else {
        let q = if is_last {
            act_quant(range.0, range.1, -128, 127)
        } else {
            act_quant(range.0, range.1, 0, 255)
        };
        let params = acc_scale
            .iter()
            .flat_map(|&s| {
                let r = Requant::from_real(s / q.scale);
                [r.multiplier, r.shift]
            })
            .collect();
        (q, params)
    };
    out.i32s(&[channels as u32, 2], params);
    out.i32s(
        &[4],
        [
            input.zero_point,
            output.zero_point,
            (output.scale as f32).to_bits() as i32,
            0,
        ],
    );
    output
}

/// Why a network cannot be quantised.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// No calibration images.
    #[error("quantisation needs at least one calibration image")]
    NoCalibration,
    /// The architecture has no int8 form.
    #[error("cannot quantise: {0}")]
    Unsupported(String),
    /// The result failed the core's validation (a bug, reported rather than written).
    #[error("the quantised model does not validate: {0}")]
    Invalid(#[from] spartan_core::Error),
}

/// Quantises `net`, calibrating activation ranges on `calib` (images in `[0, 1]`).
pub fn quantize(net: &Network, calib: ArrayView4<'_, f32>) -> Result<Vec<u8>, QuantizeError> {
    if calib.dim().0 == 0 {
        return Err(QuantizeError::NoCalibration);
    }
    let ranges = net.activation_ranges(calib);
    let spec = net.spec().clone();
    let shapes = net.shapes().to_vec();
    let last = spec.layers.len() - 1;
    let mut tensors = Tensors::default();
    let mut act = PIXELS;
    for (i, layer) in spec.layers.iter().enumerate() {
        let (input, output) = (shapes[i], shapes[i + 1]);
        let params = net.layer_params(i);
        let linear = |activation| Linear {
            weight: params[0].view(),
            bias: params[1].view(),
            activation,
        };
        match *layer {
            LayerSpec::Filter(f) => {
                let beta = f.beta as usize;
                let compile = |w: f32, b: f32| BitTable::compile(f.activation, w, b);
                match f.kind {
                    FilterKind::Conv => {
                        if input.channels != 1 {
                            return Err(QuantizeError::Unsupported(
                                "int8 Conv-Filtering needs single-channel images".into(),
                            ));
                        }
                        let (w, b) = (&params[0], &params[1]);
                        let bytes = (0..beta)
                            .flat_map(|k| compile(w[[0, k]], b[[k]]).0)
                            .flat_map(u32::to_le_bytes)
                            .collect();
                        tensors.push(DType::U8, &[beta as u32, 32], bytes);
                    }
                    FilterKind::Offset => {
                        let tables: Vec<BitTable> =
                            params[0].iter().map(|&b| compile(1.0, b)).collect();
                        // A unit is a threshold when its on-set is a suffix of 0..=255.
                        let first_on = |t: &BitTable| t.first_on().map_or(NEVER_ON, u16::from);
                        let monotone = tables.iter().all(|t| {
                            (0..=255u8).all(|p| t.get(p) == (u16::from(p) >= first_on(t)))
                        });
                        if monotone {
                            let bytes = tables
                                .iter()
                                .flat_map(|t| first_on(t).to_le_bytes())
                                .collect();
                            let dims = [
                                input.height as u32,
                                input.width as u32,
                                output.channels as u32,
                            ];
                            tensors.push(DType::U16, &dims, bytes);
                        } else {
                            let bytes = tables
                                .iter()
                                .flat_map(|t| t.0)
                                .flat_map(u32::to_le_bytes)
                                .collect();
                            tensors.push(DType::U8, &[tables.len() as u32, 32], bytes);
                        }
                    }
                }
                act = BINARY;
            }
            LayerSpec::Conv(cs) => {
                act = quantize_linear(
                    &mut tensors,
                    linear(cs.activation),
                    act,
                    ranges[i],
                    i == last,
                );
            }
            LayerSpec::MaxPool(_) => {}
            LayerSpec::Dense(d) => {
                act = quantize_linear(
                    &mut tensors,
                    linear(d.activation),
                    act,
                    ranges[i],
                    i == last,
                );
            }
        }
    }
    let mut refs = heapless::Vec::new();
    for (dtype, dims, bytes) in &tensors.0 {
        refs.push(TensorRef::new(*dtype, dims, bytes))
            .map_err(|_| {
                QuantizeError::Unsupported("too many tensors for one model file".into())
            })?;
    }
    let bytes = format::to_vec(
        ModelKind::Int8,
        &ModelBody {
            spec,
            tensors: refs,
        },
    );
    // Never write a file the device would reject.
    spartan_core::int8::Int8Model::load(&bytes)?;
    Ok(bytes)
}
