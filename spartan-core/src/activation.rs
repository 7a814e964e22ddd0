//! Composite activations: a forward function and the synthetic gradient used in its
//! place on the backward pass (docs/maths.md, paper §6.1).
//!
//! A step (Heaviside) has a zero derivative almost everywhere, so nothing upstream of
//! it could learn. A composite activation keeps the step forward and back-propagates
//! the derivative `g` of a smooth *stand-in* instead (arctan, the normal CDF, …).

use serde::{Deserialize, Serialize};

/// The Heaviside step used by every binary activation: `H(z) = 1` iff `z > 0`.
///
/// Strict on purpose (paper eq. 5): `H(0) = 0`, and a NaN maps to 0, so the output is
/// always exactly 0.0 or 1.0 — the int8 and bit-table paths rely on that.
#[inline]
pub fn heaviside(z: f32) -> f32 {
    if z > 0.0 {
        1.0
    } else {
        0.0
    }
}

/// Probability density of the centred normal distribution with standard deviation
/// `sigma`: `φσ(u) = exp(-u²/2σ²) / (σ√2π)`.
#[inline]
pub fn normal_pdf(u: f32, sigma: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let t = u / sigma;
    libm::expf(-0.5 * t * t) * INV_SQRT_2PI / sigma
}

/// Cumulative distribution of the centred normal distribution: `Φσ(u)`.
#[inline]
pub fn normal_cdf(u: f32, sigma: f32) -> f32 {
    0.5 * (1.0 + libm::erff(u / (sigma * core::f32::consts::SQRT_2)))
}

/// An activation function, possibly composite (step forward, synthetic backward).
///
/// Serialised in kebab-case, so a TOML spec reads `activation = "hsat"` or
/// `activation = { cos-hsnd = { sigma = 0.5 } }`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// `max(z, 0)`, backward `1[z > 0]`.
    Relu,
    /// The identity, for the logits layer.
    Linear,
    /// Heaviside forward, straight-through (identity) backward.
    Hsid,
    /// Heaviside forward, `arctan'(z) = 1 / (1 + z²)` backward.
    Hsat,
    /// `H(cos z)` forward, derivative of `arctan(cos z)` backward.
    CosHsat,
    /// `H(cos z)` forward, derivative of `Φσ(cos z)` backward.
    CosHsnd {
        /// Standard deviation of the normal distribution (paper default 1).
        sigma: f32,
    },
    /// Heaviside forward, normal pdf `φσ(z)` backward (paper's Candidate B, layer 1).
    Hsnd {
        /// Standard deviation of the normal distribution (paper default 1).
        sigma: f32,
    },
}

impl Activation {
    /// Every variant, with `σ = 1` where there is one: handy for tests and docs.
    pub const ALL: [Activation; 7] = [
        Activation::Relu,
        Activation::Linear,
        Activation::Hsid,
        Activation::Hsat,
        Activation::CosHsat,
        Activation::CosHsnd { sigma: 1.0 },
        Activation::Hsnd { sigma: 1.0 },
    ];

    /// The forward value `f(z)`.
    #[inline]
    pub fn forward(self, z: f32) -> f32 {
        match self {
            Activation::Relu => {
                if z > 0.0 {
                    z
                } else {
                    0.0
                }
            }
            Activation::Linear => z,
            Activation::Hsid | Activation::Hsat | Activation::Hsnd { .. } => heaviside(z),
            Activation::CosHsat | Activation::CosHsnd { .. } => heaviside(libm::cosf(z)),
        }
    }

    /// The gradient used in place of `f'(z)` on the backward pass.
    #[inline]
    pub fn surrogate_grad(self, z: f32) -> f32 {
        match self {
            Activation::Relu => {
                if z > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Linear | Activation::Hsid => 1.0,
            Activation::Hsat => 1.0 / (1.0 + z * z),
            Activation::CosHsat => {
                let c = libm::cosf(z);
                -libm::sinf(z) / (1.0 + c * c)
            }
            Activation::CosHsnd { sigma } => -libm::sinf(z) * normal_pdf(libm::cosf(z), sigma),
            Activation::Hsnd { sigma } => normal_pdf(z, sigma),
        }
    }

    /// The smooth function whose derivative [`surrogate_grad`](Self::surrogate_grad) is:
    /// `z`, `arctan z`, `arctan(cos z)`, `Φσ(cos z)`, `Φσ(z)`; ReLU is its own stand-in.
    ///
    /// Never used for training; it documents (and lets tests check) where each synthetic
    /// gradient comes from.
    pub fn stand_in(self, z: f32) -> f32 {
        match self {
            Activation::Relu => self.forward(z),
            Activation::Linear | Activation::Hsid => z,
            Activation::Hsat => libm::atanf(z),
            Activation::CosHsat => libm::atanf(libm::cosf(z)),
            Activation::CosHsnd { sigma } => normal_cdf(libm::cosf(z), sigma),
            Activation::Hsnd { sigma } => normal_cdf(z, sigma),
        }
    }

    /// True when the forward output is always exactly 0 or 1 (a step).
    pub fn is_binary(self) -> bool {
        !matches!(self, Activation::Relu | Activation::Linear)
    }

    /// True for `H(cos z)` types, whose filters need cosine initialisation.
    pub fn is_cosine(self) -> bool {
        matches!(self, Activation::CosHsat | Activation::CosHsnd { .. })
    }

    /// The σ of normal-distribution types, if any.
    pub fn sigma(self) -> Option<f32> {
        match self {
            Activation::CosHsnd { sigma } | Activation::Hsnd { sigma } => Some(sigma),
            _ => None,
        }
    }

    /// A copy with σ replaced (no-op for types without σ).
    pub fn with_sigma(self, new_sigma: f32) -> Self {
        match self {
            Activation::CosHsnd { .. } => Activation::CosHsnd { sigma: new_sigma },
            Activation::Hsnd { .. } => Activation::Hsnd { sigma: new_sigma },
            other => other,
        }
    }

    /// The paper's mnemonic, e.g. `"Cos-HSND"`.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "ReLU",
            Activation::Linear => "Linear",
            Activation::Hsid => "HSID",
            Activation::Hsat => "HSAT",
            Activation::CosHsat => "Cos-HSAT",
            Activation::CosHsnd { .. } => "Cos-HSND",
            Activation::Hsnd { .. } => "HSND",
        }
    }

    /// Whether the parameters are usable (σ finite and positive).
    pub fn is_valid(self) -> bool {
        match self.sigma() {
            Some(s) => s.is_finite() && s > 0.0,
            None => true,
        }
    }
}

impl core::fmt::Display for Activation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.sigma() {
            Some(s) if s != 1.0 => write!(f, "{}(σ={})", self.name(), s),
            _ => f.write_str(self.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGMA1: f32 = 1.0;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    /// Hand-derived values. For z = 0.5: cos 0.5 = 0.877583, sin 0.5 = 0.479426,
    /// 1/(1+0.25) = 0.8; φ1(0.877583) = exp(-0.385076)/√(2π) = 0.271441;
    /// φ1(0.5) = 0.352065. Other points are computed the same way by hand (see each row).
    #[test]
    fn forward_and_surrogate_match_hand_derived_values() {
        // (activation, z, forward, surrogate)
        let rows: &[(Activation, f32, f32, f32)] = &[
            (Activation::Relu, -1.0, 0.0, 0.0),
            (Activation::Relu, 2.5, 2.5, 1.0),
            (Activation::Relu, 0.0, 0.0, 0.0),
            (Activation::Linear, -3.0, -3.0, 1.0),
            (Activation::Hsid, -0.1, 0.0, 1.0),
            (Activation::Hsid, 0.0, 0.0, 1.0),
            (Activation::Hsid, 7.0, 1.0, 1.0),
            (Activation::Hsat, 0.0, 0.0, 1.0),
            (Activation::Hsat, 0.5, 1.0, 0.8),
            (Activation::Hsat, -2.0, 0.0, 0.2),
            (Activation::Hsat, 3.0, 1.0, 0.1),
            // cos 0 = 1 > 0 -> 1; -sin 0 = 0.
            (Activation::CosHsat, 0.0, 1.0, 0.0),
            // -0.479426 / (1 + 0.770151) = -0.270840
            (Activation::CosHsat, 0.5, 1.0, -0.270_840),
            // cos 2 = -0.416147 -> 0; -0.909297 / (1 + 0.173178) = -0.775072
            (Activation::CosHsat, 2.0, 0.0, -0.775_072),
            // z = -π/2: cos = 0 (≈ -4.4e-8 in f32) -> 0; -sin = 1, /(1+0) = 1
            (Activation::CosHsat, -core::f32::consts::FRAC_PI_2, 0.0, 1.0),
            // -0.479426 · 0.271441 = -0.130136
            (Activation::CosHsnd { sigma: SIGMA1 }, 0.5, 1.0, -0.130_136),
            // z = π: cos = -1 -> 0; -sin π ≈ 0
            (
                Activation::CosHsnd { sigma: SIGMA1 },
                core::f32::consts::PI,
                0.0,
                0.0,
            ),
            // σ = 0.5, z = 2: cos 2 = -0.416147; φ0.5(-0.416147) = exp(-0.346357)/(0.5√2π)
            // = 0.707267 · 0.797885 = 0.564318; · -0.909297 = -0.513133
            (Activation::CosHsnd { sigma: 0.5 }, 2.0, 0.0, -0.513_133),
            (Activation::Hsnd { sigma: SIGMA1 }, 0.0, 0.0, 0.398_942),
            (Activation::Hsnd { sigma: SIGMA1 }, 0.5, 1.0, 0.352_065),
            // φ1(-1) = 0.241971
            (Activation::Hsnd { sigma: SIGMA1 }, -1.0, 0.0, 0.241_971),
            // φ2(1) = exp(-0.125)/(2√2π) = 0.882497 · 0.199471 = 0.176033
            (Activation::Hsnd { sigma: 2.0 }, 1.0, 1.0, 0.176_033),
        ];
        for &(act, z, fwd, grad) in rows {
            assert_eq!(act.forward(z), fwd, "{act} forward at {z}");
            assert!(
                close(act.surrogate_grad(z), grad, 1e-5),
                "{act} surrogate at {z}: got {}, want {grad}",
                act.surrogate_grad(z)
            );
        }
    }

    /// Each surrogate is the derivative of its stand-in, checked by central differences
    /// in f64-free f32 with a step small enough for 1e-4 accuracy.
    #[test]
    fn surrogate_equals_finite_difference_of_stand_in() {
        let acts = [
            Activation::Hsid,
            Activation::Hsat,
            Activation::CosHsat,
            Activation::CosHsnd { sigma: 1.0 },
            Activation::CosHsnd { sigma: 0.5 },
            Activation::Hsnd { sigma: 1.0 },
            Activation::Hsnd { sigma: 0.3 },
            Activation::Relu,
            Activation::Linear,
        ];
        let h = 1e-3_f32;
        for act in acts {
            let mut z = -4.0_f32;
            while z <= 4.0 {
                // ReLU's stand-in has a kink at 0; skip the one point where FD is undefined.
                if !(act == Activation::Relu && z.abs() < 2.0 * h) {
                    let fd = (act.stand_in(z + h) - act.stand_in(z - h)) / (2.0 * h);
                    let g = act.surrogate_grad(z);
                    assert!(
                        (fd - g).abs() < 1e-4 * (1.0 + g.abs()) + 2e-4,
                        "{act} at z={z}: fd {fd} vs surrogate {g}"
                    );
                }
                z += 0.173;
            }
        }
    }

    #[test]
    fn binary_activations_output_only_zero_or_one() {
        for act in Activation::ALL.iter().filter(|a| a.is_binary()) {
            for i in -1000..1000 {
                let y = act.forward(i as f32 * 0.01);
                assert!(y == 0.0 || y == 1.0);
            }
            assert_eq!(act.forward(f32::NAN), 0.0, "{act} NaN");
        }
    }
}
