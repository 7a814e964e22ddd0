//! The Armv7E-M DSP extension (Cortex-M4/M7) for the microcontroller kernels, with a
//! portable equivalent of each primitive elsewhere — so hosts run, and test, the very
//! arithmetic the device runs.
//!
//! - `SMLAD` multiplies two pairs of 16-bit lanes and adds both products: two
//!   multiply-adds an instruction.
//! - `SXTB16` widens bytes 0 and 2 (`ROR #8`: 1 and 3) of a word of four `i8` weights
//!   into two 16-bit lanes; `UXTB16` does the same for four `u8` activations. Weights
//!   `(w0, w2), (w1, w3)` then meet inputs staged as `(x0, x2), (x1, x3)`.
//!
//! The block loops are `asm!`: LLVM kept the four accumulators of [`block4`] on the
//! stack and gave each pixel its own pointer (35 instructions per 16 multiply-adds,
//! measured), where one `LDM` loads two pixels' staged inputs (13 instructions).
//! Stable Rust has no DSP intrinsics (`core::arch::arm` is unstable).
#![cfg_attr(spartan_dsp, allow(unsafe_code))]

/// Bytes of staged input per group of four taps and pixel: two words.
pub(super) const GROUP_BYTES: usize = 8;

/// Four `u8` inputs (little-endian in `quad`) minus the zero point, as the two words of
/// 16-bit lanes `(x0, x2), (x1, x3)` that pair with [`sxtb16`]-widened weights.
/// `zp2` is the zero point in both halves.
#[inline(always)]
pub(super) fn widen(quad: u32, zp2: u32) -> [u32; 2] {
    #[cfg(spartan_dsp)]
    {
        let (even, odd): (u32, u32);
        // SAFETY: register-only DSP instructions (Armv7E-M is what `spartan_dsp` means);
        // no memory, stack or flags touched.
        unsafe {
            core::arch::asm!(
                "uxtb16 {e}, {q}",
                "uxtb16 {o}, {q}, ror #8",
                "ssub16 {e}, {e}, {z}",
                "ssub16 {o}, {o}, {z}",
                q = in(reg) quad, z = in(reg) zp2, e = out(reg) even, o = out(reg) odd,
                options(pure, nomem, nostack),
            );
        }
        [even, odd]
    }
    #[cfg(not(spartan_dsp))]
    {
        let zp = (zp2 & 0xFFFF) as i32;
        let lane = |b: u32| ((quad >> (8 * b)) & 0xFF) as i32 - zp;
        [pair(lane(0), lane(2)), pair(lane(1), lane(3))]
    }
}

/// Two 16-bit lanes as one word (low, high).
#[cfg(any(not(spartan_dsp), test))]
#[inline(always)]
fn pair(lo: i32, hi: i32) -> u32 {
    (lo as u16 as u32) | ((hi as u16 as u32) << 16)
}

/// The signed 16-bit lane `i` (0 low, 1 high) of `w`.
#[inline(always)]
pub(super) fn lane(w: u32, i: u32) -> i32 {
    i32::from((w >> (16 * i)) as u16 as i16)
}

/// `acc + x.lo·w.lo + x.hi·w.hi` (wrapping, as `SMLAD`).
#[inline(always)]
pub(super) fn smlad(x: u32, w: u32, acc: i32) -> i32 {
    #[cfg(spartan_dsp)]
    {
        let r: i32;
        // SAFETY: a register-only DSP instruction; no memory, stack or flags touched.
        unsafe {
            core::arch::asm!("smlad {0}, {1}, {2}, {3}", lateout(reg) r, in(reg) x, in(reg) w,
                in(reg) acc, options(pure, nomem, nostack, preserves_flags));
        }
        r
    }
    #[cfg(not(spartan_dsp))]
    {
        acc.wrapping_add(lane(x, 0) * lane(w, 0) + lane(x, 1) * lane(w, 1))
    }
}

/// Bytes 0 and 2 of `w` (and, `odd`, bytes 1 and 3) sign-extended into 16-bit lanes.
#[inline(always)]
pub(super) fn sxtb16(w: u32) -> [u32; 2] {
    #[cfg(spartan_dsp)]
    {
        let (even, odd): (u32, u32);
        // SAFETY: register-only DSP instructions; no memory, stack or flags touched.
        unsafe {
            core::arch::asm!("sxtb16 {e}, {w}", "sxtb16 {o}, {w}, ror #8", w = in(reg) w,
                e = out(reg) even, o = out(reg) odd, options(pure, nomem, nostack, preserves_flags));
        }
        [even, odd]
    }
    #[cfg(not(spartan_dsp))]
    {
        let b = |i: u32| i32::from((w >> (8 * i)) as u8 as i8);
        [pair(b(0), b(2)), pair(b(1), b(3))]
    }
}

/// `Σ w·x` of one group of four taps for one pixel: `x` its two staged words.
#[inline(always)]
pub(super) fn mac_group(x: [u32; 2], w: u32, acc: i32) -> i32 {
    let [w02, w13] = sxtb16(w);
    smlad(x[1], w13, smlad(x[0], w02, acc))
}

/// The word of four weights at `w[0..4]`.
#[inline(always)]
pub(super) fn weight_word(w: &[u8]) -> u32 {
    match w {
        [a, b, c, d, ..] => u32::from_le_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

/// Word `i` of a staged buffer.
#[inline(always)]
pub(super) fn staged_word(x: &[u8], i: usize) -> u32 {
    weight_word(x.get(4 * i..).unwrap_or(&[]))
}

/// Adds to each of four pixels' accumulators `Σ w·x` over the groups of four taps in
/// `w` and `x` (staged per group as pixel 0's two words, pixel 1's, …, see
/// [`widen`]). `x` must be word-aligned on the device.
#[inline]
pub(super) fn block4(x: &[u8], w: &[u8], acc: [i32; 4]) -> [i32; 4] {
    let groups = (x.len() / (4 * GROUP_BYTES)).min(w.len() / 4);
    #[cfg(spartan_dsp)]
    if (x.as_ptr() as usize).is_multiple_of(4) {
        return asm_block4(x.as_ptr(), w.as_ptr(), groups, acc);
    }
    portable_block::<4>(x, w, groups, acc)
}

/// [`block4`] for two pixels.
#[inline]
pub(super) fn block2(x: &[u8], w: &[u8], acc: [i32; 2]) -> [i32; 2] {
    let groups = (x.len() / (2 * GROUP_BYTES)).min(w.len() / 4);
    #[cfg(spartan_dsp)]
    if (x.as_ptr() as usize).is_multiple_of(4) {
        return asm_block2(x.as_ptr(), w.as_ptr(), groups, acc);
    }
    portable_block::<2>(x, w, groups, acc)
}

/// The block loop in portable Rust: the same integers as `SMLAD`.
#[cfg_attr(spartan_dsp, allow(dead_code))]
fn portable_block<const P: usize>(
    x: &[u8],
    w: &[u8],
    groups: usize,
    mut acc: [i32; P],
) -> [i32; P] {
    for (xs, ws) in x
        .chunks_exact(P * GROUP_BYTES)
        .zip(w.chunks_exact(4))
        .take(groups)
    {
        let wv = weight_word(ws);
        for (p, a) in acc.iter_mut().enumerate() {
            *a = mac_group([staged_word(xs, 2 * p), staged_word(xs, 2 * p + 1)], wv, *a);
        }
    }
    acc
}

/// One group of four taps for four pixels: weights widened once, two `LDM`s of two
/// pixels' staged words each, eight `SMLAD`s.
#[cfg(spartan_dsp)]
macro_rules! group4 {
    () => {
        concat!(
            "ldr {w}, [{wp}], #4\n",
            "sxtb16 {t}, {w}, ror #8\n",
            "sxtb16 {w}, {w}\n",
            "ldm {xp}!, {{r0, r1, r2, r3}}\n",
            "smlad {a0}, r0, {w}, {a0}\n",
            "smlad {a0}, r1, {t}, {a0}\n",
            "smlad {a1}, r2, {w}, {a1}\n",
            "smlad {a1}, r3, {t}, {a1}\n",
            "ldm {xp}!, {{r0, r1, r2, r3}}\n",
            "smlad {a2}, r0, {w}, {a2}\n",
            "smlad {a2}, r1, {t}, {a2}\n",
            "smlad {a3}, r2, {w}, {a3}\n",
            "smlad {a3}, r3, {t}, {a3}\n",
        )
    };
}

/// [`block4`] on the device: three groups per loop turn (13 instructions each, the loop
/// bound kept on the stack: the block uses all twelve free registers), then the rest.
#[cfg(spartan_dsp)]
#[inline(always)]
fn asm_block4(x: *const u8, w: *const u8, groups: usize, acc: [i32; 4]) -> [i32; 4] {
    let [mut a0, mut a1, mut a2, mut a3] = acc;
    let (mut xp, mut wp) = (x, w);
    let triples = groups / 3;
    if triples > 0 {
        let end = xp.wrapping_add(triples * 3 * 4 * GROUP_BYTES);
        // SAFETY: the caller's slices hold `groups` groups: `x` has `32 · groups` bytes
        // (word-aligned, as `LDM` needs) and `w` `4 · groups`; the loop reads exactly the
        // first `triples` of them and stops when `xp` reaches `end`. The pushed word is
        // popped before the block ends; r0–r3 are declared clobbered.
        unsafe {
            core::arch::asm!(
                "push {{{w}}}",
                "2:",
                group4!(),
                group4!(),
                group4!(),
                "ldr {t}, [sp]",
                "cmp {xp}, {t}",
                "bne 2b",
                "add sp, sp, #4",
                xp = inout(reg) xp, wp = inout(reg) wp,
                a0 = inout(reg) a0, a1 = inout(reg) a1, a2 = inout(reg) a2, a3 = inout(reg) a3,
                w = inout(reg) end => _, t = out(reg) _,
                out("r0") _, out("r1") _, out("r2") _, out("r3") _,
                options(readonly),
            );
        }
    }
    for _ in 0..groups % 3 {
        // SAFETY: as above, for one of the remaining groups (fewer than three).
        unsafe {
            core::arch::asm!(
                group4!(),
                xp = inout(reg) xp, wp = inout(reg) wp,
                a0 = inout(reg) a0, a1 = inout(reg) a1, a2 = inout(reg) a2, a3 = inout(reg) a3,
                w = out(reg) _, t = out(reg) _,
                out("r0") _, out("r1") _, out("r2") _, out("r3") _,
                options(readonly, nostack),
            );
        }
    }
    [a0, a1, a2, a3]
}

/// [`block2`] on the device: one group per turn, 8 instructions for 8 multiply-adds.
#[cfg(spartan_dsp)]
#[inline(always)]
fn asm_block2(x: *const u8, w: *const u8, groups: usize, acc: [i32; 2]) -> [i32; 2] {
    let [mut a0, mut a1] = acc;
    if groups > 0 {
        let end = x.wrapping_add(groups * 2 * GROUP_BYTES);
        // SAFETY: `x` holds `16 · groups` word-aligned bytes and `w` `4 · groups`; the
        // loop reads exactly those and stops when `xp` reaches `end`; r0–r3 are
        // declared clobbered.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldr {w}, [{wp}], #4",
                "sxtb16 {t}, {w}, ror #8",
                "sxtb16 {w}, {w}",
                "ldm {xp}!, {{r0, r1, r2, r3}}",
                "smlad {a0}, r0, {w}, {a0}",
                "smlad {a0}, r1, {t}, {a0}",
                "smlad {a1}, r2, {w}, {a1}",
                "smlad {a1}, r3, {t}, {a1}",
                "cmp {xp}, {end}",
                "bne 2b",
                xp = inout(reg) x => _, wp = inout(reg) w => _,
                a0 = inout(reg) a0, a1 = inout(reg) a1,
                end = in(reg) end, w = out(reg) _, t = out(reg) _,
                out("r0") _, out("r1") _, out("r2") _, out("r3") _,
                options(readonly, nostack),
            );
        }
    }
    [a0, a1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::XorShift as Rng;

    #[test]
    fn widened_pairs_meet_widened_weights() {
        let mut rng = Rng(0xD5B);
        for _ in 0..10_000 {
            let (x, w) = (rng.next_u64() as u32, rng.next_u64() as u32);
            let zp = rng.below(256) as i32;
            let want: i32 = (0..4)
                .map(|i| {
                    let xi = ((x >> (8 * i)) & 0xFF) as i32 - zp;
                    let wi = i32::from((w >> (8 * i)) as u8 as i8);
                    xi * wi
                })
                .sum();
            let zp2 = (zp as u32) * 0x0001_0001;
            assert_eq!(mac_group(widen(x, zp2), w, 7), want + 7);
        }
        assert_eq!(pair(-1, 2), 0x0002_FFFF);
    }
}
