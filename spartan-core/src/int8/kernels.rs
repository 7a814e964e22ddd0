//! Output stages shared by every kernel: how an `i32` accumulator becomes an
//! activation, in its reference form and in the forms each kind of machine does best
//! (all equal, tested).

use super::model::OutputStage;
use super::record::le_i32;
use crate::quant::{cos_positive, NarrowRequant, Requant};

/// The activation of accumulator `acc` of channel `c`: the specification every
/// kernel's output stage equals (gemmlowp's rescale, then the zero point and ReLU).
pub(super) fn finish(out: &OutputStage<'_>, c: usize, acc: i32) -> i32 {
    Finisher::reference(out, c).apply(acc)
}

/// One channel's output stage, decoded once and applied to many accumulators.
#[derive(Clone, Copy, Debug)]
pub(super) enum Finisher {
    /// The rescale in its narrow form (accumulators known to be small enough).
    Narrow {
        r: NarrowRequant,
        zero_point: i32,
        floor: i32,
    },
    /// The rescale as gemmlowp composes it.
    Reference {
        r: Requant,
        zero_point: i32,
        floor: i32,
    },
    /// `H(acc)`.
    Step,
    /// `H(cos(acc · scale))` with the Q48 phase factor.
    Cosine(i64),
}

impl Finisher {
    /// Channel `c` of `out`, narrow where accumulators are at most `bound` in size.
    #[inline]
    pub(super) fn new(out: &OutputStage<'_>, c: usize, bound: u32) -> Self {
        match Self::reference(out, c) {
            Finisher::Reference {
                r,
                zero_point,
                floor,
            } => match NarrowRequant::new(&r, bound) {
                Some(r) => Finisher::Narrow {
                    r,
                    zero_point,
                    floor,
                },
                None => Finisher::Reference {
                    r,
                    zero_point,
                    floor,
                },
            },
            other => other,
        }
    }

    /// Channel `c` of `out` in its reference form.
    #[inline]
    pub(super) fn reference(out: &OutputStage<'_>, c: usize) -> Self {
        match *out {
            OutputStage::Requant {
                params,
                zero_point,
                relu,
            } => Finisher::Reference {
                r: Requant {
                    multiplier: le_i32(params, 2 * c),
                    shift: le_i32(params, 2 * c + 1),
                },
                zero_point,
                floor: if relu { zero_point } else { i32::MIN },
            },
            OutputStage::Step => Finisher::Step,
            OutputStage::Cosine(f) => Finisher::Cosine(
                (le_i32(f, 2 * c) as u32 as i64) | ((le_i32(f, 2 * c + 1) as i64) << 32),
            ),
        }
    }

    /// The output for `acc`, before clamping to the activation's type.
    #[inline(always)]
    pub(super) fn apply(&self, acc: i32) -> i32 {
        match *self {
            // `|q| < 2^30` here, so adding the zero point cannot overflow.
            Finisher::Narrow {
                r,
                zero_point,
                floor,
            } => (r.apply(acc) + zero_point).max(floor),
            Finisher::Reference {
                r,
                zero_point,
                floor,
            } => r.apply_reference(acc).saturating_add(zero_point).max(floor),
            Finisher::Step => i32::from(acc > 0),
            Finisher::Cosine(f) => i32::from(cos_positive(acc, f)),
        }
    }

    /// The `u8` activation for `acc`.
    #[inline(always)]
    pub(super) fn hidden(&self, acc: i32) -> u8 {
        self.apply(acc).clamp(0, 255) as u8
    }
}
