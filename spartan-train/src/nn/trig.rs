//! Vectorised kernels for the composite activations whose core definitions call libm per
//! value (`cosf`, `sinf`, `expf`): Cos-HSAT, Cos-HSND and HSND.
//!
//! Why: those calls were 45 % of a candidate-b training step (`perf`, 2026-11-30), and a
//! function call per value keeps the loop scalar. Here everything is arithmetic on f64
//! lanes, compiled for AVX-512 and AVX2 (`multiversion`).
//!
//! - Forward, `H(cos z)`: the sign of `cos z` from `z / 2π` in f64. It is the core's
//!   0/1 exactly: the few values within 10⁻⁶ of a period of a zero of the cosine, and
//!   huge or non-finite ones, are handed to the core's own `forward`.
//! - Backward: `sin`, `cos` (Cody–Waite reduction, Taylor polynomials on `|r| ≤ π/4`)
//!   and `exp` in f64, rounded once to f32. Within a few f32 ulps of the core's f32 libm
//!   values (tested); being per-value arithmetic, the same whatever the batch or thread
//!   count.

use multiversion::multiversion;
use spartan_core::activation::Activation;
use std::f64::consts::{FRAC_2_PI, LOG2_E, PI};

/// Values per block: the forward kernel fixes a block's unsure values from a copy.
const BLOCK: usize = 64;

/// Beyond this `|z|` the f64 reductions are not trusted; the core decides.
const MAX_FAST: f64 = 1.0e5;

/// Half-width, in periods, of the band around a zero of `cos` left to the core.
const UNSURE: f64 = 1.0e-6;

/// `1 / √(2π)`.
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// `π/2` in two parts (fdlibm's `pio2_1`, `pio2_1t`): the first has 33 bits, so
/// `n · PIO2_HI` is exact for the `n` reached below [`MAX_FAST`].
const PIO2_HI: f64 = 1.570_796_326_734_125_6;
const PIO2_LO: f64 = 6.077_100_506_506_192e-11;

/// `ln 2` split the same way (fdlibm's `ln2_hi`, `ln2_lo`), for `exp`.
const LN2_HI: f64 = 0.693_147_180_369_123_8;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;

/// `(sin z, cos z)` for `|z| ≤` [`MAX_FAST`] (errors below 1e-11, far below an f32 ulp).
#[inline(always)]
fn sin_cos(z: f64) -> (f64, f64) {
    let n = (z * FRAC_2_PI).round_ties_even();
    let r = (z - n * PIO2_HI) - n * PIO2_LO;
    let r2 = r * r;
    let s = r
        * (1.0
            + r2 * (-1.0 / 6.0
                + r2 * (1.0 / 120.0
                    + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362_880.0 + r2 * (-1.0 / 39_916_800.0))))));
    let c = 1.0
        + r2 * (-0.5
            + r2 * (1.0 / 24.0
                + r2 * (-1.0 / 720.0
                    + r2 * (1.0 / 40_320.0
                        + r2 * (-1.0 / 3_628_800.0 + r2 * (1.0 / 479_001_600.0))))));
    // Quadrant n mod 4: sin z = s, c, -s, -c and cos z = c, -s, -c, s.
    let q = n - 4.0 * (n * 0.25).floor();
    let odd = q == 1.0 || q == 3.0;
    let (a, b) = if odd { (c, s) } else { (s, c) };
    let sin = if q >= 2.0 { -a } else { a };
    let cos = if q == 1.0 || q == 2.0 { -b } else { b };
    (sin, cos)
}

/// `e^x` for `x ≤ 0` (below −708 it is clamped: the result is then ≈ 1e-308, zero once
/// rounded to f32).
#[inline(always)]
fn exp_neg(x: f64) -> f64 {
    let x = x.max(-708.0);
    let k = (x * LOG2_E).round_ties_even();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0
                            + r * (1.0 / 720.0
                                + r * (1.0 / 5040.0
                                    + r * (1.0 / 40_320.0
                                        + r * (1.0 / 362_880.0
                                            + r * (1.0 / 3_628_800.0
                                                + r * (1.0 / 39_916_800.0)))))))))));
    // 2^k from its exponent bits; k ≥ -1022 after the clamp.
    p * f64::from_bits(((k as i64 + 1023) as u64) << 52)
}

/// `φσ(u)` in f64 (the core's `normal_pdf`).
#[inline(always)]
fn normal_pdf(u: f64, sigma: f64) -> f64 {
    let t = u / sigma;
    exp_neg(-0.5 * t * t) * INV_SQRT_2PI / sigma
}

/// `H(cos z)` of every value, in place; true when some value was left unsure (near a
/// zero of the cosine, huge, or not finite) and must be redone by the core.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn cos_step_block(values: &mut [f32]) -> bool {
    let mut unsure = false;
    for v in values.iter_mut() {
        let z = f64::from(*v);
        // cos z > 0 exactly when z/2π + 1/4 has a fractional part in (0, 1/2).
        let u = z * (0.5 / PI) + 0.25;
        let f = u - u.floor();
        let near = f < UNSURE || (f - 0.5).abs() < UNSURE || f > 1.0 - UNSURE;
        unsure |= near || !(z.abs() < MAX_FAST);
        *v = if f < 0.5 { 1.0 } else { 0.0 };
    }
    unsure
}

/// Replaces every value by `act.forward(z)` for a cosine step (Cos-HSAT, Cos-HSND),
/// the same 0/1 as the core.
pub fn cos_step_in_place(act: Activation, values: &mut [f32]) {
    debug_assert!(act.is_cosine());
    let mut copy = [0.0f32; BLOCK];
    for block in values.chunks_mut(BLOCK) {
        let copy = &mut copy[..block.len()];
        copy.copy_from_slice(block);
        if cos_step_block(block) {
            for (v, &z) in block.iter_mut().zip(copy.iter()) {
                *v = act.forward(z);
            }
        }
    }
}

/// `grad *= act.surrogate_grad(z)` for Cos-HSAT, Cos-HSND and HSND; false (nothing
/// done) for the other activations.
pub fn surrogate_backward(act: Activation, pre: &[f32], grad: &mut [f32]) -> bool {
    match act {
        Activation::CosHsat => cos_hsat_backward(pre, grad),
        Activation::CosHsnd { sigma } => cos_hsnd_backward(pre, grad, f64::from(sigma)),
        Activation::Hsnd { sigma } => hsnd_backward(pre, grad, f64::from(sigma)),
        _ => return false,
    }
    // Values the reductions do not cover get the core's formula.
    for (g, &z) in grad.iter_mut().zip(pre) {
        if !(f64::from(z).abs() < MAX_FAST) {
            *g *= act.surrogate_grad(z);
        }
    }
    true
}

/// Whether the reductions cover `z`; the kernels leave the upstream gradient in the
/// other slots for [`surrogate_backward`] to finish with the core's formula.
#[inline(always)]
fn in_range(z: f64) -> bool {
    z.abs() < MAX_FAST
}

#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn cos_hsnd_backward(pre: &[f32], grad: &mut [f32], sigma: f64) {
    for (g, &z) in grad.iter_mut().zip(pre) {
        let z = f64::from(z);
        let (s, c) = sin_cos(if in_range(z) { z } else { 0.0 });
        let d = -s * normal_pdf(c, sigma);
        *g = if in_range(z) {
            (f64::from(*g) * d) as f32
        } else {
            *g
        };
    }
}

#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn cos_hsat_backward(pre: &[f32], grad: &mut [f32]) {
    for (g, &z) in grad.iter_mut().zip(pre) {
        let z = f64::from(z);
        let (s, c) = sin_cos(if in_range(z) { z } else { 0.0 });
        let d = -s / (1.0 + c * c);
        *g = if in_range(z) {
            (f64::from(*g) * d) as f32
        } else {
            *g
        };
    }
}

#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn hsnd_backward(pre: &[f32], grad: &mut [f32], sigma: f64) {
    for (g, &z) in grad.iter_mut().zip(pre) {
        let z = f64::from(z);
        let d = normal_pdf(if in_range(z) { z } else { 0.0 }, sigma);
        *g = if in_range(z) {
            (f64::from(*g) * d) as f32
        } else {
            *g
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dense grid, every f32 within 40 ulps of the first 2,000 zeros of the cosine on
    /// each side, and the awkward values.
    fn probes() -> Vec<f32> {
        let mut z: Vec<f32> = (-200_000..200_000).map(|i| i as f32 * 0.000_77).collect();
        for k in -2000..2000 {
            let zero = (k as f64 + 0.5) * PI;
            let near = zero as f32;
            for d in -40i32..=40 {
                z.push(f32::from_bits((near.to_bits() as i32 + d) as u32));
            }
        }
        z.extend([
            0.0,
            -0.0,
            1.0e5,
            -1.0e5,
            3.0e7,
            -8.0e12,
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        z
    }

    #[test]
    fn cosine_steps_are_the_cores_exactly() {
        let z = probes();
        for act in [Activation::CosHsat, Activation::CosHsnd { sigma: 0.5 }] {
            let mut y = z.clone();
            cos_step_in_place(act, &mut y);
            for (&z, &y) in z.iter().zip(&y) {
                assert_eq!(y.to_bits(), act.forward(z).to_bits(), "{act} at {z:e}");
            }
        }
    }

    /// Against an f64 evaluation of the same formula (tight), and against the core's
    /// f32 libm formula within its own rounding (its `t·t` feeds `expf` an argument
    /// with a relative error of an ulp, so large arguments lose bits).
    #[test]
    fn surrogate_gradients_match_the_core() {
        let z = probes();
        let up: Vec<f32> = (0..z.len())
            .map(|i| ((i * 7919) % 13) as f32 * 0.1 - 0.6)
            .collect();
        let exact = |act: Activation, z: f64| match act {
            Activation::CosHsat => -z.sin() / (1.0 + z.cos() * z.cos()),
            Activation::CosHsnd { sigma } => {
                let t = z.cos() / f64::from(sigma);
                -z.sin() * (-0.5 * t * t).exp() * INV_SQRT_2PI / f64::from(sigma)
            }
            Activation::Hsnd { sigma } => {
                let t = z / f64::from(sigma);
                (-0.5 * t * t).exp() * INV_SQRT_2PI / f64::from(sigma)
            }
            _ => unreachable!(),
        };
        for act in [
            Activation::CosHsat,
            Activation::CosHsnd { sigma: 1.0 },
            Activation::CosHsnd { sigma: 0.25 },
            Activation::Hsnd { sigma: 1.0 },
            Activation::Hsnd { sigma: 0.3 },
        ] {
            let mut g = up.clone();
            assert!(surrogate_backward(act, &z, &mut g));
            for i in 0..z.len() {
                let core = up[i] * act.surrogate_grad(z[i]);
                if core.is_nan() {
                    assert!(g[i].is_nan(), "{act} at {:e}: {} vs NaN", z[i], g[i]);
                    continue;
                }
                let off = f64::from(g[i] - core).abs();
                assert!(
                    off <= 2e-5 * f64::from(core.abs()) + 1e-36,
                    "{act} at {:e}: {} vs core {core}",
                    z[i],
                    g[i]
                );
                if z[i].abs() < 1.0e3 {
                    let want = f64::from(up[i]) * exact(act, f64::from(z[i]));
                    let off = (f64::from(g[i]) - want).abs();
                    assert!(
                        off <= 2e-7 * want.abs() + 1e-44,
                        "{act} at {:e}: {} vs {want}",
                        z[i],
                        g[i]
                    );
                }
            }
        }
    }

    #[test]
    fn other_activations_are_left_to_the_caller() {
        let mut g = [1.0f32; 3];
        assert!(!surrogate_backward(Activation::Hsat, &[0.0; 3], &mut g));
        assert_eq!(g, [1.0; 3]);
    }

    #[test]
    fn reductions_cover_every_quadrant() {
        for i in -4000..4000 {
            let z = f64::from(i) * 0.013 + 0.001;
            let (s, c) = sin_cos(z);
            assert!((s - z.sin()).abs() < 1e-10, "sin {z}: {s} vs {}", z.sin());
            assert!((c - z.cos()).abs() < 1e-10, "cos {z}: {c} vs {}", z.cos());
            let x = -0.085 * f64::from(i + 4000);
            assert!((exp_neg(x) - x.exp()).abs() <= 1e-13 * x.exp(), "exp {x}");
        }
    }
}
