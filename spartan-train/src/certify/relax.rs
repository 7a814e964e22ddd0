//! Linear relaxations of the activations, shared by the forward and backward passes so
//! both use the same bounds.

use core::f64::consts::{FRAC_PI_2, PI};
use spartan_core::activation::Activation;

/// ReLU on a pre-activation interval `[l, h]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Relu {
    /// `h ≤ 0`: the output is 0.
    Zero,
    /// `l ≥ 0`: the output is the input.
    Identity,
    /// `l < 0 < h`: `alpha·z ≤ y ≤ slope·z + icpt` (DeepPoly's triangle; the lower
    /// slope is 0 or 1, whichever leaves the smaller area).
    Unstable { alpha: f64, slope: f64, icpt: f64 },
}

impl Relu {
    pub fn new(l: f64, h: f64) -> Self {
        if h <= 0.0 {
            Relu::Zero
        } else if l >= 0.0 {
            Relu::Identity
        } else {
            let slope = h / (h - l);
            Relu::Unstable {
                alpha: if h >= -l { 1.0 } else { 0.0 },
                slope,
                icpt: -slope * l,
            }
        }
    }
}

/// The factor `D` by which a monotone, 1-Lipschitz activation (ReLU, a max over its
/// window) passes on a difference of its inputs: `ReLU(a) − ReLU(b) = D·(a − b)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slope {
    /// Both inputs on the flat side.
    Zero,
    /// Both on the identity side.
    One,
    /// Unknown: somewhere in `[0, 1]`.
    Unit,
}

impl Slope {
    /// Encloses `D·μ` for `μ ∈ [lo, hi]`, in place.
    pub fn apply(self, lo: &mut f64, hi: &mut f64) {
        match self {
            Slope::Zero => (*lo, *hi) = (0.0, 0.0),
            Slope::One => {}
            Slope::Unit => (*lo, *hi) = (lo.min(0.0), hi.max(0.0)),
        }
    }
}

/// The output range (`{0}`, `{1}` or `[0, 1]`) of a binary activation whose
/// pre-activation lies in `[l, h]`.
///
/// A step is on iff `z > 0`, decided exactly. A cosine step `H(cos z)` is on iff
/// `cos z > 0`; it is decided only when `[l, h]`, widened by `10⁻⁶·(1 + |z|)`, holds
/// no zero `π/2 + mπ` of the cosine — a margin far above the error of `cosf` and of
/// π in f64, so the network's `f32` cosine has the sign decided here.
pub(crate) fn binary_range(act: Activation, l: f64, h: f64) -> (f64, f64) {
    if !(l.is_finite() && h.is_finite()) {
        return (0.0, 1.0);
    }
    if act.is_cosine() {
        let delta = 1e-6 * (1.0 + l.abs().max(h.abs()));
        let m = ((l - delta - FRAC_PI_2) / PI).ceil();
        let zero = FRAC_PI_2 + m * PI;
        if zero <= h + delta {
            (0.0, 1.0)
        } else if (0.5 * (l + h)).cos() > 0.0 {
            (1.0, 1.0)
        } else {
            (0.0, 0.0)
        }
    } else if l > 0.0 {
        (1.0, 1.0)
    } else if h <= 0.0 {
        (0.0, 0.0)
    } else {
        (0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_cases() {
        assert_eq!(Relu::new(-2.0, -0.5), Relu::Zero);
        assert_eq!(Relu::new(0.0, 3.0), Relu::Identity);
        let Relu::Unstable { alpha, slope, icpt } = Relu::new(-1.0, 3.0) else {
            panic!("unstable")
        };
        // Upper line through (−1, 0) and (3, 3).
        assert_eq!((alpha, slope, icpt), (1.0, 0.75, 0.75));
        assert!(matches!(Relu::new(-3.0, 1.0), Relu::Unstable { alpha, .. } if alpha == 0.0));
    }

    #[test]
    fn binary_ranges_hold_on_dense_samples() {
        // For many intervals, every f32 in them gives an output inside the range.
        let acts = [
            Activation::Hsat,
            Activation::CosHsat,
            Activation::CosHsnd { sigma: 1.0 },
        ];
        let mut seed = 0x1234_5678_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for act in acts {
            for _ in 0..2000 {
                let l = next() * 20.0 - 10.0;
                let h = l + next() * next() * 4.0;
                let (lo, hi) = binary_range(act, l, h);
                for k in 0..=200 {
                    let z = (l + (h - l) * k as f64 / 200.0) as f32;
                    if f64::from(z) < l || f64::from(z) > h {
                        continue;
                    }
                    let y = f64::from(act.forward(z));
                    assert!(
                        lo <= y && y <= hi,
                        "{act} [{l}, {h}] at {z}: {y} ∉ [{lo}, {hi}]"
                    );
                }
            }
        }
        // Decided cases are decided.
        assert_eq!(binary_range(Activation::CosHsat, 0.1, 1.5), (1.0, 1.0));
        assert_eq!(binary_range(Activation::CosHsat, 1.7, 4.6), (0.0, 0.0));
        assert_eq!(binary_range(Activation::CosHsat, 1.5, 1.7), (0.0, 1.0));
        assert_eq!(binary_range(Activation::Hsat, 0.0, 0.0), (0.0, 0.0));
    }
}
