//! Post-training quantisation: an f32 network and calibration images in, an int8 model
//! file (same container, kind int8) out. The integer semantics and the file's int8
//! records live in `spartan_core::int8` (its `Int8Writer` encodes them); this module only
//! chooses the numbers.
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
use spartan_core::int8::{FilterRecord, Int8Writer, LinearRecord, OutputRecord, NEVER_ON};
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

/// A conv or dense layer's float parameters: weights `[…, C_out]` (the output channel
/// fastest, as the file stores them) and biases `[C_out]`.
struct Linear<'a> {
    weight: ArrayViewD<'a, f32>,
    bias: ArrayViewD<'a, f32>,
    activation: Activation,
}

/// Quantises a conv or dense layer into the writer. Returns the output activation
/// quantisation.
fn quantize_linear(
    out: &mut Int8Writer,
    layer: Linear<'_>,
    input: ActQuant,
    range: (f32, f32),
    is_last: bool,
) -> Result<ActQuant, QuantizeError> {
    let Linear {
        weight,
        bias,
        activation,
    } = layer;
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
    let qw: Vec<i8> = weight
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            (f64::from(w) / scales[i % channels])
                .round()
                .clamp(-127.0, 127.0) as i8
        })
        .collect();
    let acc_scale: Vec<f64> = scales.iter().map(|s| s * input.scale).collect();
    let qb = bias
        .iter()
        .zip(&acc_scale)
        .map(|(&b, s)| (f64::from(b) / s).round().clamp(-1e9, 1e9) as i32)
        .collect();
    let (output, params) = if activation.is_binary() {
        let params = if activation.is_cosine() {
            OutputRecord::Cosine(acc_scale.iter().map(|&s| phase_factor(s)).collect())
        } else {
            OutputRecord::Step
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
            .map(|&s| Requant::from_real(s / q.scale))
            .collect();
        (q, OutputRecord::Requant(params))
    };
    out.linear(&LinearRecord {
        weight: qw,
        bias: qb,
        output: params,
        zp_in: input.zero_point,
        zp_out: output.zero_point,
        scale_out: output.scale as f32,
    })?;
    Ok(output)
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
    #[error("the quantised model does not validate")]
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
    let mut writer = Int8Writer::new(spec.clone())?;
    let mut act = PIXELS;
    for (i, layer) in spec.layers.iter().enumerate() {
        let input = shapes[i];
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
                let record = match f.kind {
                    FilterKind::Conv => {
                        if input.channels != 1 {
                            return Err(QuantizeError::Unsupported(
                                "int8 Conv-Filtering needs single-channel images".into(),
                            ));
                        }
                        let (w, b) = (&params[0], &params[1]);
                        FilterRecord::Shared(
                            (0..beta).map(|k| compile(w[[0, k]], b[[k]])).collect(),
                        )
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
                            FilterRecord::Thresholds(tables.iter().map(first_on).collect())
                        } else {
                            FilterRecord::PerUnit(tables)
                        }
                    }
                };
                writer.filter(&record)?;
                act = BINARY;
            }
            LayerSpec::Conv(cs) => {
                act = quantize_linear(
                    &mut writer,
                    linear(cs.activation),
                    act,
                    ranges[i],
                    i == last,
                )?;
            }
            LayerSpec::MaxPool(_) => {}
            LayerSpec::Dense(d) => {
                act =
                    quantize_linear(&mut writer, linear(d.activation), act, ranges[i], i == last)?;
            }
        }
    }
    // The writer checks the file as the device will: never write one it would reject.
    Ok(writer.finish()?)
}
