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

/// Channels finished together on hosts: the rescale's branch-free 64-bit lanes
/// vectorise.
const LANES: usize = 16;

/// The `u8` activations of one pixel's accumulators, channels `0..acc.len()`.
///
/// Compiled for AVX-512/AVX2 and the baseline, picked at run time (`multiversion`).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma",
    "x86_64+avx2+fma"
))]
pub(super) fn finish_channels(out: &OutputStage<'_>, acc: &[i32], dst: &mut [u8]) {
    let OutputStage::Requant {
        params,
        zero_point,
        relu,
    } = *out
    else {
        for (c, (o, &a)) in dst.iter_mut().zip(acc).enumerate() {
            *o = Finisher::reference(out, c).hidden(a);
        }
        return;
    };
    let floor = if relu { zero_point } else { i32::MIN };
    let mut blocks = acc.chunks_exact(LANES);
    let mut outs = dst.chunks_exact_mut(LANES);
    let mut words = params.chunks_exact(8 * LANES);
    for ((a, o), p) in (&mut blocks).zip(&mut outs).zip(&mut words) {
        // Decoded once per block so the lanes below are straight-line (vectorised).
        let mut multiplier = [0i32; LANES];
        let mut shift = [0i32; LANES];
        for (j, word) in p.chunks_exact(8).enumerate() {
            multiplier[j] = le_i32(word, 0);
            shift[j] = le_i32(word, 1);
        }
        for j in 0..LANES {
            let r = Requant {
                multiplier: multiplier[j],
                shift: shift[j],
            };
            o[j] = r
                .apply(a[j])
                .saturating_add(zero_point)
                .max(floor)
                .clamp(0, 255) as u8;
        }
    }
    let done = acc.len() - blocks.remainder().len();
    for (j, (o, &a)) in outs
        .into_remainder()
        .iter_mut()
        .zip(blocks.remainder())
        .enumerate()
    {
        *o = Finisher::reference(out, done + j).hidden(a);
    }
}
