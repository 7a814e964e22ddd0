//! Fixed-point arithmetic of the int8 path (gemmlowp / TFLite conventions), and the
//! host-side helpers that turn real scales into it.
//!
//! On the device everything is integer: an `i32` accumulator is rescaled by a
//! multiplier in `[2^30, 2^31)` and a power-of-two shift, with round-to-nearest.

/// `round(a · b / 2^31)`, saturating: gemmlowp's `SaturatingRoundingDoublingHighMul`.
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Division (truncation toward zero) as in gemmlowp, not an arithmetic shift.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `round(x / 2^exponent)`, ties away from zero: gemmlowp's `RoundingDivideByPOT`.
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    if exponent == 0 {
        return x;
    }
    let exponent = exponent.min(31);
    let mask: i64 = (1i64 << exponent) - 1;
    let remainder = (x as i64) & mask;
    let threshold = (mask >> 1) + i64::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// A real multiplier `m · 2^shift / 2^31` in fixed point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requant {
    /// In `[2^30, 2^31)`, or 0 for a zero multiplier.
    pub multiplier: i32,
    /// Power-of-two exponent, in `[-31, 30]`.
    pub shift: i32,
}

impl Requant {
    /// Whether the fields are in range (validation of untrusted files).
    pub fn is_valid(&self) -> bool {
        (self.multiplier == 0 || self.multiplier >= 1 << 30) && (-31..=30).contains(&self.shift)
    }

    /// `round(x · real)` where `real` is the multiplier this encodes.
    ///
    /// Branch-free in 64-bit lanes, so a block of channels vectorises on hosts; equal to
    /// [`Requant::apply_reference`] (gemmlowp's composition) for every valid encoding
    /// and every `x` (tested).
    #[inline(always)]
    pub fn apply(&self, x: i32) -> i32 {
        const LOW31: i64 = (1 << 31) - 1;
        let left = self.shift.clamp(0, 31);
        let right = (-self.shift).clamp(0, 31);
        let scaled = ((x as i64) << left).clamp(i32::MIN as i64, i32::MAX as i64);
        // SaturatingRoundingDoublingHighMul: nudge, then truncate toward zero.
        let ab = scaled * self.multiplier as i64;
        let nudged = ab + if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
        let high = (nudged + ((nudged >> 63) & LOW31)) >> 31;
        let high = if scaled == i32::MIN as i64 && self.multiplier == i32::MIN {
            i32::MAX as i64
        } else {
            high
        };
        // RoundingDivideByPOT: ties away from zero.
        let mask = (1i64 << right) - 1;
        let threshold = (mask >> 1) + i64::from(high < 0);
        ((high >> right) + i64::from((high & mask) > threshold)) as i32
    }

    /// gemmlowp's scalar composition: the specification [`Requant::apply`] must equal, and
    /// the cheaper form on 32-bit microcontrollers.
    #[inline]
    pub fn apply_reference(&self, x: i32) -> i32 {
        let left = self.shift.max(0) as u32;
        let right = (-self.shift).max(0) as u32;
        let scaled = x.saturating_mul(1i32 << left);
        rounding_divide_by_pot(
            saturating_rounding_doubling_high_mul(scaled, self.multiplier),
            right,
        )
    }

    /// Encodes a non-negative real multiplier (host side; the device never needs it).
    pub fn from_real(real: f64) -> Self {
        if real.is_nan() || real <= 0.0 || !real.is_finite() {
            return Requant::default();
        }
        // real = q · 2^e with q in [0.5, 1).
        let mut e = 0i32;
        let mut q = real;
        while q >= 1.0 {
            q /= 2.0;
            e += 1;
        }
        while q < 0.5 {
            q *= 2.0;
            e -= 1;
        }
        let mut m = libm::round(q * (1u64 << 31) as f64) as i64;
        if m == 1i64 << 31 {
            m /= 2;
            e += 1;
        }
        if e < -31 {
            // Too small to matter: every accumulator rounds to 0.
            return Requant::default();
        }
        Requant {
            multiplier: m as i32,
            shift: e.min(30),
        }
    }
}

/// `round(a · b / 2^32)` (ties up): Armv7E-M's one-instruction `SMMULR`.
#[inline(always)]
pub fn smmulr(a: i32, b: i32) -> i32 {
    #[cfg(spartan_dsp)]
    {
        let r: i32;
        // SAFETY: a register-only arithmetic instruction of Armv7E-M (what
        // `spartan_dsp` means): no memory, stack or flags touched.
        #[allow(unsafe_code)]
        unsafe {
            core::arch::asm!("smmulr {0}, {1}, {2}", lateout(reg) r, in(reg) a, in(reg) b,
                options(pure, nomem, nostack, preserves_flags));
        }
        r
    }
    #[cfg(not(spartan_dsp))]
    {
        ((i64::from(a) * i64::from(b) + (1 << 31)) >> 32) as i32
    }
}

/// A [`Requant`] prepared for accumulators known to be small (`|acc| · 2^(shift+1) <
/// 2^31`), where gemmlowp's composition takes five instructions on a 32-bit core:
///
/// - `SaturatingRoundingDoublingHighMul(a, m) = ⌊(a·m + 2^30) / 2^31⌋` (gemmlowp's
///   sign-dependent nudge with truncation is this floor), which is
///   `SMMULR(2a, m) = ⌊(2a·m + 2^31) / 2^32⌋` when `2a` fits an `i32`;
/// - `RoundingDivideByPOT(x, e)` (ties away from zero) is `(x + 2^(e−1) − [x < 0]) >> e`
///   for `e ≥ 1` (and `x` for `e = 0`), which cannot overflow since `|x| < 2^30`.
///
/// Equal to [`Requant::apply_reference`] wherever [`NarrowRequant::new`] accepts
/// (tested).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NarrowRequant {
    multiplier: i32,
    /// `shift + 1` (the doubling folded into the left shift), in `[1, 31]`.
    pre_shift: u32,
    /// Right shift, in `[0, 31]`.
    right: u32,
    /// `2^(right−1)`, 0 without a right shift.
    half: i32,
    /// All ones with a right shift (negative values round down one more), else 0.
    negative: i32,
}

impl NarrowRequant {
    /// The narrow form of `r` for accumulators with `|acc| ≤ bound`, if it is exact:
    /// `bound · 2^(shift+1) < 2^31`.
    pub fn new(r: &Requant, bound: u32) -> Option<Self> {
        let left = r.shift.max(0) as u32;
        let right = (-r.shift).max(0) as u32;
        if left > 30 || right > 31 || (u64::from(bound) << (left + 1)) >= 1 << 31 {
            return None;
        }
        Some(NarrowRequant {
            multiplier: r.multiplier,
            pre_shift: left + 1,
            right,
            half: if right > 0 { 1 << (right - 1) } else { 0 },
            negative: if right > 0 { -1 } else { 0 },
        })
    }

    /// The five words of the narrow form, to keep a table of them in scratch memory.
    pub(crate) fn to_words(self) -> [u32; 5] {
        [
            self.multiplier as u32,
            self.pre_shift,
            self.right,
            self.half as u32,
            self.negative as u32,
        ]
    }

    /// The narrow form back from [`to_words`](Self::to_words) (shifts kept in range).
    #[inline(always)]
    pub(crate) fn from_words(w: [u32; 5]) -> Self {
        NarrowRequant {
            multiplier: w[0] as i32,
            pre_shift: w[1] & 31,
            right: w[2] & 31,
            half: w[3] as i32,
            negative: w[4] as i32,
        }
    }

    /// `round(acc · real)`, as [`Requant::apply_reference`].
    #[inline(always)]
    pub fn apply(&self, acc: i32) -> i32 {
        let x = smmulr(acc << self.pre_shift, self.multiplier);
        (x + self.half + ((x >> 31) & self.negative)) >> self.right
    }
}

/// Fraction of a full turn per accumulator unit, in Q48, for `H(cos z)` with
/// `z = scale · acc`: the output is on where the phase is within a quarter turn of 0.
pub const PHASE_BITS: u32 = 48;

/// `f = round(scale / 2π · 2^48)` (host side).
pub fn phase_factor(scale: f64) -> i64 {
    libm::round(scale / (2.0 * core::f64::consts::PI) * (1u64 << PHASE_BITS) as f64) as i64
}

/// `H(cos(scale · acc))` in integers: the phase `acc·f mod 2^48` (exact under wrapping)
/// must lie in `[0, 1/4)` or `(3/4, 1)` of a turn.
#[inline]
pub fn cos_positive(acc: i32, factor: i64) -> bool {
    let mask = (1i64 << PHASE_BITS) - 1;
    let phase = (acc as i64).wrapping_mul(factor) & mask;
    let quarter = 1i64 << (PHASE_BITS - 2);
    phase < quarter || phase > 3 * quarter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requant_matches_real_multiplication() {
        for &real in &[0.000_123_4, 0.0031, 0.25, 0.5, 0.999_9, 1.0, 1.7, 37.5] {
            let r = Requant::from_real(real);
            assert!(r.is_valid(), "{real}: {r:?}");
            for &x in &[0, 1, -1, 7, -7, 1000, -1000, 123_456, -987_654, 20_000_000] {
                let want = libm::round(x as f64 * real);
                let got = r.apply(x) as f64;
                assert!((got - want).abs() <= 1.0, "{real} × {x}: {got} vs {want}");
            }
        }
        assert_eq!(Requant::from_real(0.0).apply(12345), 0);
    }

    #[test]
    fn branch_free_apply_equals_the_gemmlowp_composition() {
        let mut rng = crate::test_rng::XorShift(0x9E37_79B9_7F4A_7C15);
        let edges = [
            0,
            1,
            -1,
            2,
            -2,
            i32::MAX,
            i32::MIN,
            i32::MAX - 1,
            i32::MIN + 1,
        ];
        for shift in -31..=30 {
            for multiplier in [0, 1 << 30, (1 << 30) + 1, i32::MAX, i32::MAX - 1] {
                let r = Requant { multiplier, shift };
                for &x in &edges {
                    assert_eq!(r.apply(x), r.apply_reference(x), "{r:?} × {x}");
                }
            }
        }
        for _ in 0..200_000 {
            let v = rng.next_u64();
            let r = Requant {
                multiplier: if v.is_multiple_of(17) {
                    0
                } else {
                    (1 << 30) | (v >> 34) as i32
                },
                shift: (v % 62) as i32 - 31,
            };
            assert!(r.is_valid());
            let x = (rng.next_u64() >> 32) as i32 >> (rng.next_u64() % 32);
            assert_eq!(r.apply(x), r.apply_reference(x), "{r:?} × {x}");
        }
    }

    #[test]
    fn narrow_requant_equals_the_gemmlowp_composition_where_it_applies() {
        let mut rng = crate::test_rng::XorShift(0x5851_F42D_4C95_7F2D);
        let mut checked = 0u32;
        for round in 0..400_000 {
            let v = rng.next_u64();
            let r = Requant {
                multiplier: match v % 23 {
                    0 => 0,
                    1 => i32::MAX,
                    2 => 1 << 30,
                    _ => (1 << 30) | (v >> 34) as i32,
                },
                shift: (v % 62) as i32 - 31,
            };
            let bound = ((rng.next_u64() >> 33) as u32) >> (rng.next_u64() % 31);
            let Some(n) = NarrowRequant::new(&r, bound) else {
                // Refused only where the identities need more room.
                assert!((u64::from(bound) << (r.shift.max(0) + 1)) >= 1 << 31);
                continue;
            };
            let span = i64::from(bound);
            let b = bound as i32;
            for x in [
                b,
                -b,
                0,
                1.min(b),
                -(1.min(b)),
                ((rng.next_u64() % (2 * span as u64 + 1)) as i64 - span) as i32,
            ] {
                assert_eq!(
                    n.apply(x),
                    r.apply_reference(x),
                    "{r:?} × {x} (round {round})"
                );
                checked += 1;
            }
        }
        assert!(checked > 100_000, "only {checked} cases in range");
        // Every accumulator of a typical layer, against every rounding tie.
        let r = Requant::from_real(1.0 / 512.0);
        let n = NarrowRequant::new(&r, 1 << 20).unwrap();
        for x in -(1 << 20)..=(1 << 20) {
            assert_eq!(n.apply(x), r.apply_reference(x), "{x}");
        }
    }

    #[test]
    fn fixed_point_primitives_follow_gemmlowp() {
        // 0.5 in Q31 times 3 is 1.5 -> 2; times -3 is -1.5 -> -1: gemmlowp's nudge
        // rounds exact halves up (toward +∞).
        assert_eq!(saturating_rounding_doubling_high_mul(3, 1 << 30), 2);
        assert_eq!(saturating_rounding_doubling_high_mul(-3, 1 << 30), -1);
        assert_eq!(saturating_rounding_doubling_high_mul(-5, 1 << 29), -1);
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(4, 1), 2);
        assert_eq!(rounding_divide_by_pot(-4, 2), -1);
    }

    #[test]
    fn integer_cosine_sign_matches_float() {
        for &scale in &[0.001f64, 0.013, 0.2, 1.3] {
            let f = phase_factor(scale);
            for acc in (-5000..5000).step_by(7) {
                let z = scale * acc as f64;
                let c = libm::cos(z);
                if c.abs() > 1e-6 {
                    assert_eq!(cos_positive(acc, f), c > 0.0, "scale {scale} acc {acc}");
                }
            }
        }
    }
}
