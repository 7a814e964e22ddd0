//! Binary filtering layers (paper §6.2, docs/maths.md) and their compilation to bit
//! tables over raw `u8` pixels.
//!
//! A filtering unit computes `f(w·x + b)` with a binary composite activation `f`. For a
//! single input channel that is a function of the raw pixel alone, so it can be
//! tabulated exactly: the device never needs floating point for layer 1.

use crate::activation::Activation;
use serde::{Deserialize, Serialize};

/// Which filtering layer (paper §6.2.1 and §6.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilterKind {
    /// 1×1 convolution with β output channels: a learned thermometer encoding shared by
    /// every pixel. Regularised by L1 on its activations.
    Conv,
    /// One neuron per input element and threshold, weight fixed to 1, learned bias: a
    /// per-pixel mask. Regularised by the binary entropy of its rescaled thresholds.
    Offset,
}

/// The default filter-regularisation scaling factor `sf` of the paper.
pub const DEFAULT_SF: f32 = 1e-5;

fn default_sf() -> f32 {
    DEFAULT_SF
}

/// Configuration of a filtering layer; the weights live in the model file beside it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Conv- or Offset-Filtering.
    pub kind: FilterKind,
    /// Number of thresholds per input channel (β).
    pub beta: u16,
    /// A binary composite activation.
    pub activation: Activation,
    /// Weight of the filter regulariser relative to the training loss (`sf`).
    #[serde(default = "default_sf")]
    pub sf: f32,
}

/// Converts a raw pixel to the network's input range `[0, 1]`.
///
/// Every path (trainer, float inference, bit tables) uses this one function so that a
/// pixel means exactly the same `f32` everywhere.
#[inline]
pub fn pixel_to_unit(p: u8) -> f32 {
    p as f32 / 255.0
}

/// Pre-activation of one single-input filtering unit, `w·x + b`.
///
/// Shared by every implementation so tables and float paths agree bit for bit.
#[inline]
pub fn unit_preactivation(w: f32, x: f32, b: f32) -> f32 {
    w * x + b
}

/// Pre-activation of one Conv-Filtering output at one pixel: `Σ_c w(c)·x[c] + b`, where
/// `w(c)` is the weight from channel `c`. With one channel it is exactly
/// [`unit_preactivation`], the expression bit tables are compiled from.
#[inline]
pub fn conv_filter_preactivation(weight_of: impl Fn(usize) -> f32, bias: f32, xs: &[f32]) -> f32 {
    if let [x] = xs {
        return unit_preactivation(weight_of(0), *x, bias);
    }
    let mut z = bias;
    for (c, &x) in xs.iter().enumerate() {
        z += weight_of(c) * x;
    }
    z
}

/// Initial Conv-Filtering bias for threshold `k` of `beta` (step types):
/// `b_k = -(k+1)/(β+1)`, thresholds spread evenly inside `(0, 1)`.
pub fn initial_step_bias(k: usize, beta: usize) -> f32 {
    -((k + 1) as f32) / ((beta + 1) as f32)
}

/// Rescaled threshold `B = (τ - x_min) / (x_max - x_min)` of Offset-Filtering, with the
/// input range `[0, 1]`: `τ = -b`, so `B = -b`.
#[inline]
pub fn offset_rescaled_threshold(bias: f32) -> f32 {
    -bias
}

/// Binary entropy `h(B) = -B log₂ B - (1-B) log₂(1-B)`, 0 at the edges, 1 at ½.
pub fn binary_entropy(b: f32) -> f32 {
    let term = |p: f32| if p > 0.0 { -p * libm::log2f(p) } else { 0.0 };
    term(b) + term(1.0 - b)
}

/// Derivative of [`binary_entropy`]: `log₂((1-B)/B)`, clamped away from the edges where
/// it diverges (thresholds are clipped to the edges, so the clamp only bounds the step).
pub fn binary_entropy_grad(b: f32) -> f32 {
    const EPS: f32 = 1e-6;
    let b = b.clamp(EPS, 1.0 - EPS);
    libm::log2f((1.0 - b) / b)
}

/// The output bit of one filtering unit for every raw pixel value: 256 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BitTable(pub [u32; 8]);

impl BitTable {
    /// Tabulates `f(w · p/255 + b) > 0` for `p = 0..=255` with the float code path.
    ///
    /// Exact by construction: it evaluates the very expression the float layers use.
    pub fn compile(activation: Activation, w: f32, b: f32) -> Self {
        let mut words = [0u32; 8];
        for p in 0..=255u8 {
            let y = activation.forward(unit_preactivation(w, pixel_to_unit(p), b));
            if y > 0.0 {
                words[(p >> 5) as usize] |= 1 << (p & 31);
            }
        }
        BitTable(words)
    }

    /// The bit for pixel `p`.
    #[inline]
    pub fn get(&self, p: u8) -> bool {
        (self.0[(p >> 5) as usize] >> (p & 31)) & 1 == 1
    }

    /// How many of the 256 pixel values switch the unit on.
    pub fn count_ones(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    /// For a monotone (step-type) unit: the smallest pixel value that is on, or `None`
    /// when no pixel is. Meaningful for inspection; the table itself is always exact.
    pub fn first_on(&self) -> Option<u8> {
        (0..=255u8).find(|&p| self.get(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::XorShift;

    #[test]
    fn bit_tables_equal_float_forward_for_every_pixel() {
        let mut rng = XorShift(0x5eed_1234_abcd_0001);
        let step = [
            Activation::Hsid,
            Activation::Hsat,
            Activation::Hsnd { sigma: 1.0 },
        ];
        let cos = [Activation::CosHsat, Activation::CosHsnd { sigma: 1.0 }];
        for trial in 0..200 {
            let (act, w, b) = if trial % 2 == 0 {
                let a = step[trial % 3];
                (a, rng.uniform(-3.0, 3.0), rng.uniform(-2.0, 2.0))
            } else {
                // Cos types: the authors' init range and well beyond it (several periods).
                let a = cos[trial % 2];
                (a, rng.uniform(-20.0, 20.0), rng.uniform(-7.0, 7.0))
            };
            let table = BitTable::compile(act, w, b);
            for p in 0..=255u8 {
                let float = act.forward(w * (p as f32 / 255.0) + b);
                assert_eq!(table.get(p), float == 1.0, "{act} w={w} b={b} p={p}");
            }
        }
    }

    #[test]
    fn step_table_is_a_thermometer_threshold() {
        // w = 1, b = -0.4: on iff p/255 > 0.4, i.e. p >= 103 (102/255 = 0.4 exactly).
        let t = BitTable::compile(Activation::Hsat, 1.0, -0.4);
        assert_eq!(t.first_on(), Some(103));
        assert_eq!(t.count_ones(), 256 - 103);
    }

    #[test]
    fn entropy_is_maximal_at_half_and_zero_at_edges() {
        assert_eq!(binary_entropy(0.0), 0.0);
        assert_eq!(binary_entropy(1.0), 0.0);
        assert!((binary_entropy(0.5) - 1.0).abs() < 1e-6);
        let h = 1e-3;
        for b in [0.1f32, 0.3, 0.5, 0.77, 0.9] {
            let fd = (binary_entropy(b + h) - binary_entropy(b - h)) / (2.0 * h);
            assert!((fd - binary_entropy_grad(b)).abs() < 1e-3, "b={b}");
        }
    }

    #[test]
    fn initial_biases_spread_thresholds_evenly() {
        let b: [f32; 4] = core::array::from_fn(|k| initial_step_bias(k, 4));
        assert_eq!(b, [-0.2, -0.4, -0.6, -0.8]);
    }
}
