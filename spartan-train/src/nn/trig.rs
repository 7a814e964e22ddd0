//! Vectorised kernels for the composite activations whose core definitions call libm per
//! value (`cosf`, `sinf`, `expf`): Cos-HSAT, Cos-HSND and HSND.
//!
//! Why: those calls were 45 % of a candidate-b training step (`perf`, 2026-11-30), and a
//! function call per value keeps the loop scalar. Here everything is arithmetic on
//! vector lanes, compiled for AVX-512 and AVX2 (`multiversion`).
//!
//! - Forward, `H(cos z)`: the sign of `cos z` from the fractional part of `z / 2π`. It
//!   is the core's 0/1 exactly: the few values within 10⁻⁵ of a period of a zero of
//!   the cosine (where f32 rounding could flip the sign), and large or non-finite ones,
//!   are handed to the core's own `forward`.
//! - Backward: `sin`, `cos` (reduction by `π/2` in f64, Taylor polynomials on
//!   `|r| ≤ π/4` in f32) and `exp`. Within a few f32 ulps of the core's f32 libm values
//!   (tested); being per-value arithmetic, the same whatever the batch or thread count.

use multiversion::multiversion;
use spartan_core::activation::Activation;
use std::f64::consts::{FRAC_2_PI, PI};

/// Values per block: the forward kernel fixes a block's unsure values from a copy.
const BLOCK: usize = 64;

/// Beyond this `|z|` the f64 reductions are not trusted; the core decides.
const MAX_FAST: f64 = 1.0e5;

/// Beyond this `|z|` the forward's f32 period fraction is not trusted; the core decides.
const MAX_STEP: f32 = 100.0;

/// Half-width, in periods, of the band around a zero of `cos` left to the core: the
/// f32 fraction's error is below 3e-6 for `|z| <` [`MAX_STEP`].
const UNSURE: f32 = 1.0e-5;

/// `1 / √(2π)`.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `π/2` in two parts (fdlibm's `pio2_1`, `pio2_1t`): the first has 33 bits, so
/// `n · PIO2_HI` is exact for the `n` reached below [`MAX_FAST`].
const PIO2_HI: f64 = 1.570_796_326_734_125_6;
const PIO2_LO: f64 = 6.077_100_506_506_192e-11;

/// `ln 2` in two f32 parts (cephes' `expf`), for `exp`: `k · LN2_HI` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `(sin z, cos z)` for `|z| ≤` [`MAX_FAST`]: the reduction by `π/2` in f64 (exact
/// enough that no bits of `r` are lost), the polynomials on `|r| ≤ π/4` in f32 lanes
/// (twice as many per instruction; Taylor errors below 1e-9).
#[inline(always)]
fn sin_cos(z: f32) -> (f32, f32) {
    let z = f64::from(z);
    let n = (z * FRAC_2_PI).round_ties_even();
    let r = ((z - n * PIO2_HI) - n * PIO2_LO) as f32;
    // Quadrant n mod 4 in the low bits: n is an integer, |n| < 2²², so exact in f32,
    // and 1.5·2²³ + n has a unit ulp and 2²² + n as its mantissa (as in `exp_neg`).
    let q = (n as f32 + 12_582_912.0).to_bits();
    let (s, c) = sin_cos_reduced(r);
    // sin z = s, c, -s, -c and cos z = c, -s, -c, s by quadrant: swapped in odd
    // quadrants, negated (sign bit flipped) in quadrants 2, 3 and 1, 2.
    let (a, b) = if q & 1 == 1 { (c, s) } else { (s, c) };
    let sin = f32::from_bits(a.to_bits() ^ ((q & 2) << 30));
    let cos = f32::from_bits(b.to_bits() ^ (((q + 1) & 2) << 30));
    (sin, cos)
}

/// `(sin r, cos r)` for `|r| ≤ π/4`: Taylor polynomials.
#[inline(always)]
fn sin_cos_reduced(r: f32) -> (f32, f32) {
    let r2 = r * r;
    let s = r
        * (1.0
            + r2 * (-1.0 / 6.0
                + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362_880.0)))));
    let c = 1.0
        + r2 * (-0.5
            + r2 * (1.0 / 24.0
                + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40_320.0 + r2 * (-1.0 / 3_628_800.0)))));
    (s, c)
}

/// `e^x` for `x ≤ 0`, in f32 (below −87 it is clamped to ≈ 1.6e-38, where the core's
/// `expf` gives subnormals or zero).
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    let x = x.max(-87.0);
    let k = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0
                            + r * (1.0 / 720.0 + r * (1.0 / 5040.0 + r * (1.0 / 40_320.0))))))));
    // 2^k from its exponent bits, k ≥ -126 after the clamp. Adding 2^23 puts the
    // integer k + 127 in the low mantissa bits, and the shift keeps only those: no
    // float-to-int conversion (Rust's saturating `as` would not vectorise).
    let biased = (k + (127.0 + 8_388_608.0)).to_bits();
    p * f32::from_bits(biased << 23)
}

/// `φσ(u)` (the core's `normal_pdf`), with `over_sigma(x)` = `x / σ`.
#[inline(always)]
fn normal_pdf(u: f32, over_sigma: impl Fn(f32) -> f32) -> f32 {
    let t = over_sigma(u);
    over_sigma(exp_neg(-0.5 * t * t) * INV_SQRT_2PI)
}

/// `1/σ` when multiplying by it gives exactly `x / σ` for every `x`: σ a power of two
/// (the default 1) whose reciprocal is a normal f32. Both round the same real `x·2⁻ᵏ`,
/// so the result is the division's bit for bit, without two vector divisions per value
/// (a third of the Cos-HSND backward, `perf`).
fn exact_reciprocal(sigma: f32) -> Option<f32> {
    const MANTISSA: u32 = (1 << 23) - 1;
    let inv = 1.0 / sigma;
    let pow2 = |v: f32| v.is_normal() && v > 0.0 && v.to_bits() & MANTISSA == 0;
    (pow2(sigma) && pow2(inv)).then_some(inv)
}

/// `H(cos z)` of every value, in place, keeping each `z` in `kept`; true when some
/// value was left unsure (near a zero of the cosine, huge, or not finite) and must be
/// redone by the core.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn cos_step_block(values: &mut [f32], kept: &mut [f32]) -> bool {
    let mut unsure = false;
    for (v, k) in values.iter_mut().zip(kept.iter_mut()) {
        *k = *v;
        let z = *v;
        // cos z > 0 exactly when z/2π + 1/4 has a fractional part in (0, 1/2).
        let u = z * (0.5 / PI as f32) + 0.25;
        let f = u - u.floor();
        let near = f < UNSURE || (f - 0.5).abs() < UNSURE || f > 1.0 - UNSURE;
        unsure |= near || z.is_nan() || z.abs() >= MAX_STEP;
        *v = if f < 0.5 { 1.0 } else { 0.0 };
    }
    unsure
}

/// Replaces every value by `act.forward(z)` for a cosine step (Cos-HSAT, Cos-HSND),
/// the same 0/1 as the core, keeping the pre-activations in `pre` if given (one pass
/// over memory for both).
pub fn cos_step_in_place(act: Activation, values: &mut [f32], mut pre: Option<&mut [f32]>) {
    debug_assert!(act.is_cosine());
    let mut copy = [0.0f32; BLOCK];
    for (i, block) in values.chunks_mut(BLOCK).enumerate() {
        let kept = match pre.as_deref_mut() {
            Some(pre) => &mut pre[i * BLOCK..][..block.len()],
            None => &mut copy[..block.len()],
        };
        if cos_step_block(block, kept) {
            for (v, &z) in block.iter_mut().zip(kept.iter()) {
                *v = act.forward(z);
            }
        }
    }
}

/// `grad *= act.surrogate_grad(z)` for Cos-HSAT, Cos-HSND and HSND; false (nothing
/// done) for the other activations.
pub fn surrogate_backward(act: Activation, pre: &[f32], grad: &mut [f32]) -> bool {
    let beyond = match act {
        Activation::CosHsat => cos_hsat_backward(pre, grad),
        Activation::CosHsnd { sigma } => cos_hsnd_backward(pre, grad, sigma),
        Activation::Hsnd { sigma } => hsnd_backward(pre, grad, sigma),
        _ => return false,
    };
    if beyond {
        // Values the reductions do not cover get the core's formula.
        for (g, &z) in grad.iter_mut().zip(pre) {
            if !in_range(z) {
                *g *= act.surrogate_grad(z);
            }
        }
    }
    true
}

/// Whether the reductions cover `z`; the kernels leave the upstream gradient in the
/// other slots (and say so) for [`surrogate_backward`] to finish with the core's
/// formula.
#[inline(always)]
fn in_range(z: f32) -> bool {
    // The same test in f32 lanes: `MAX_FAST` is an f32 exactly.
    z.abs() < MAX_FAST as f32
}

/// `grad *= d(z)` where `z` is in range (else `grad` is left for the caller); true if
/// some `z` was out of range.
#[inline(always)]
fn scale_by(pre: &[f32], grad: &mut [f32], d: impl Fn(f32) -> f32) -> bool {
    let mut beyond = false;
    for (g, &z) in grad.iter_mut().zip(pre) {
        let ok = in_range(z);
        beyond |= !ok;
        let dz = d(if ok { z } else { 0.0 });
        *g = if ok { *g * dz } else { *g };
    }
    beyond
}

/// `-sin z · φσ(cos z)`.
#[inline(always)]
fn cos_hsnd(z: f32, over_sigma: impl Fn(f32) -> f32) -> f32 {
    let (s, c) = sin_cos(z);
    -s * normal_pdf(c, over_sigma)
}

#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn cos_hsnd_backward(pre: &[f32], grad: &mut [f32], sigma: f32) -> bool {
    match exact_reciprocal(sigma) {
        Some(inv) => scale_by(pre, grad, |z| cos_hsnd(z, |x| x * inv)),
        None => scale_by(pre, grad, |z| cos_hsnd(z, |x| x / sigma)),
    }
}

#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn cos_hsat_backward(pre: &[f32], grad: &mut [f32]) -> bool {
    scale_by(pre, grad, |z| {
        let (s, c) = sin_cos(z);
        -s / (1.0 + c * c)
    })
}

#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn hsnd_backward(pre: &[f32], grad: &mut [f32], sigma: f32) -> bool {
    match exact_reciprocal(sigma) {
        Some(inv) => scale_by(pre, grad, |z| normal_pdf(z, |x| x * inv)),
        None => scale_by(pre, grad, |z| normal_pdf(z, |x| x / sigma)),
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
            let (mut y, mut pre) = (z.clone(), vec![0.0; z.len()]);
            cos_step_in_place(act, &mut y, Some(&mut pre));
            assert_eq!(
                pre.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                z.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            let mut y_alone = z.clone();
            cos_step_in_place(act, &mut y_alone, None);
            assert_eq!(y, y_alone);
            for (&z, &y) in z.iter().zip(&y) {
                assert_eq!(y.to_bits(), act.forward(z).to_bits(), "{act} at {z:e}");
            }
        }
    }

    /// Against an f64 evaluation of the same formula and against the core's f32 libm
    /// formula, both within the f32 rounding of the argument of `exp` (one ulp of
    /// `0.5 t²` is a relative error of `0.5 t²` ulps in the result, in the core too).
    #[test]
    fn surrogate_gradients_match_the_core() {
        let z = probes();
        let up: Vec<f32> = (0..z.len())
            .map(|i| ((i * 7919) % 13) as f32 * 0.1 - 0.6)
            .collect();
        let pdf = |u: f64, sigma: f32| {
            let t = u / f64::from(sigma);
            let d = (-0.5 * t * t).exp() / (2.0 * PI).sqrt() / f64::from(sigma);
            (d, 1.0 + 0.5 * t * t)
        };
        let exact = |act: Activation, z: f64| match act {
            Activation::CosHsat => (-z.sin() / (1.0 + z.cos() * z.cos()), 1.0),
            Activation::CosHsnd { sigma } => {
                let (d, spread) = pdf(z.cos(), sigma);
                (-z.sin() * d, spread)
            }
            Activation::Hsnd { sigma } => pdf(z, sigma),
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
                let (d, spread) = exact(act, f64::from(z[i]));
                let spread = if spread.is_finite() { spread } else { 1.0 };
                let off = f64::from(g[i] - core).abs();
                assert!(
                    off <= 6e-7 * spread * f64::from(core.abs()) + 1e-36,
                    "{act} at {:e}: {} vs core {core}",
                    z[i],
                    g[i]
                );
                if z[i].abs() < 1.0e3 {
                    let want = f64::from(up[i]) * d;
                    let off = (f64::from(g[i]) - want).abs();
                    assert!(
                        off <= 5e-7 * spread * want.abs() + 1e-37,
                        "{act} at {:e}: {} vs {want}",
                        z[i],
                        g[i]
                    );
                }
            }
        }
    }

    /// Where σ is a power of two the kernels multiply by `1/σ`: bit for bit the
    /// division, which the other σ keep.
    #[test]
    fn reciprocal_sigmas_give_the_divisions_bits() {
        let divided = |u: f32, sigma: f32| normal_pdf(u, |x| x / sigma);
        for sigma in [1.0f32, 0.5, 0.25, 2.0, 8.0, 2f32.powi(-60), 2f32.powi(60)] {
            let inv = exact_reciprocal(sigma).expect("a power of two");
            for z in probes() {
                let want = (
                    divided(z, sigma),
                    -sin_cos(z).0 * divided(sin_cos(z).1, sigma),
                );
                let got = (normal_pdf(z, |x| x * inv), cos_hsnd(z, |x| x * inv));
                assert_eq!(got.0.to_bits(), want.0.to_bits(), "HSND σ {sigma} at {z:e}");
                assert_eq!(
                    got.1.to_bits(),
                    want.1.to_bits(),
                    "Cos-HSND σ {sigma} at {z:e}"
                );
            }
        }
        for sigma in [0.3f32, 1.5, 3.0, 2f32.powi(127), f32::MIN_POSITIVE / 2.0] {
            assert_eq!(exact_reciprocal(sigma), None, "σ {sigma}");
        }
    }

    /// The quadrant as first written (in f64, float compares): the kernels' bit
    /// twiddling must give its values bit for bit.
    fn sin_cos_reference(z: f32) -> (f32, f32) {
        let z = f64::from(z);
        let n = (z * FRAC_2_PI).round_ties_even();
        let r = ((z - n * PIO2_HI) - n * PIO2_LO) as f32;
        let q = (n - 4.0 * (n * 0.25).floor()) as f32;
        let (s, c) = sin_cos_reduced(r);
        let (a, b) = if q == 1.0 || q == 3.0 { (c, s) } else { (s, c) };
        let sin = if q >= 2.0 { -a } else { a };
        let cos = if q == 1.0 || q == 2.0 { -b } else { b };
        (sin, cos)
    }

    #[test]
    fn quadrants_from_bits_match_the_float_compares() {
        for z in probes().into_iter().filter(|&z| in_range(z)) {
            let (s, c) = sin_cos(z);
            let (ws, wc) = sin_cos_reference(z);
            assert_eq!(
                (s.to_bits(), c.to_bits()),
                (ws.to_bits(), wc.to_bits()),
                "{z:e}"
            );
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
            let z = i as f32 * 0.013 + 0.001;
            let (s, c) = sin_cos(z);
            let z64 = f64::from(z);
            let (ws, wc) = (z64.sin(), z64.cos());
            assert!(
                (f64::from(s) - ws).abs() <= 3e-7 * ws.abs() + 2e-9,
                "sin {z}"
            );
            assert!(
                (f64::from(c) - wc).abs() <= 3e-7 * wc.abs() + 2e-9,
                "cos {z}"
            );
            let x = -0.0107 * (i + 4000) as f32;
            let want = f64::from(x).exp();
            assert!(
                (f64::from(exp_neg(x)) - want).abs() <= 4e-7 * want,
                "exp {x}"
            );
        }
    }
}
