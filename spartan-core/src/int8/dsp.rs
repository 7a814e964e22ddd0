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
//! The block loop is `asm!`: LLVM kept four accumulators on the stack and gave each
//! pixel its own pointer (35 instructions per 16 multiply-adds, measured), where one
//! `LDM` loads two pixels' staged inputs (13 instructions).
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
/// `w` and `x` (staged per group as pixel 0's two words, pixel 1's, …, see [`widen`]).
/// The path of layers whose taps are not whole groups (e.g. a first conv on one
/// channel); [`channels4`] is the fast one.
pub(super) fn block4(x: &[u8], w: &[u8], acc: [i32; 4]) -> [i32; 4] {
    let groups = (x.len() / (4 * GROUP_BYTES)).min(w.len() / 4);
    portable_block(x, w, groups, acc)
}

/// The block loop in portable Rust: the same integers as `SMLAD`.
fn portable_block(x: &[u8], w: &[u8], groups: usize, mut acc: [i32; 4]) -> [i32; 4] {
    for (xs, ws) in x
        .chunks_exact(4 * GROUP_BYTES)
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

/// One group of four taps for four pixels, in the fixed registers of [`asm_channels4`]:
/// weights widened once, two `LDM`s of two pixels' staged words each, eight `SMLAD`s.
#[cfg(spartan_dsp)]
macro_rules! group4 {
    () => {
        concat!(
            "ldr r10, [lr], #4\n",
            "sxtb16 r11, r10, ror #8\n",
            "sxtb16 r10, r10\n",
            "ldm r12!, {{r0, r1, r2, r3}}\n",
            "smlad r4, r0, r10, r4\n",
            "smlad r4, r1, r11, r4\n",
            "smlad r5, r2, r10, r5\n",
            "smlad r5, r3, r11, r5\n",
            "ldm r12!, {{r0, r1, r2, r3}}\n",
            "smlad r8, r0, r10, r8\n",
            "smlad r8, r1, r11, r8\n",
            "smlad r9, r2, r10, r9\n",
            "smlad r9, r3, r11, r9\n",
        )
    };
}

/// Accumulators of every output channel for four staged pixels: for channel `c`,
/// `bias[c]` plus [`block4`] over its `4 · groups` weights (channels one after another
/// in `weights`, as the file stores them), written as four little-endian words at
/// `out[16c..]` (`out` word-aligned on the device).
///
/// On the device one `asm!` block runs the whole channel loop (the per-channel glue
/// LLVM wrote around [`block4`] cost as much as a third of the multiply-adds): nine
/// groups per loop turn, then single groups.
pub(super) fn channels4(staged: &[u8], weights: &[u8], bias: &[u8], groups: usize, out: &mut [u8]) {
    let channels = (out.len() / 16).min(bias.len() / 4);
    let enough = staged.len() >= groups * 4 * GROUP_BYTES && weights.len() >= channels * groups * 4;
    if !enough || channels == 0 || groups == 0 {
        return;
    }
    #[cfg(spartan_dsp)]
    if (staged.as_ptr() as usize).is_multiple_of(4) && (out.as_ptr() as usize).is_multiple_of(4) {
        asm_channels4(
            staged.as_ptr(),
            weights.as_ptr(),
            bias.as_ptr(),
            groups,
            channels,
            out.as_mut_ptr(),
        );
        return;
    }
    for (c, (acc, w)) in out
        .chunks_exact_mut(16)
        .zip(weights.chunks_exact(groups * 4))
        .take(channels)
        .enumerate()
    {
        let b = weight_word(&bias[4 * c..]) as i32;
        let sums = portable_block(staged, w, groups, [b; 4]);
        for (dst, s) in acc.chunks_exact_mut(4).zip(sums) {
            dst.copy_from_slice(&s.to_le_bytes());
        }
    }
}

/// [`channels4`] on the device. Registers: r0–r3 staged words (`LDM`), r4, r5, r8, r9
/// the accumulators (stored with one `STM`), r10/r11 weights, r12 the staged pointer,
/// lr the weight pointer; the rest of the state on the stack.
#[cfg(spartan_dsp)]
fn asm_channels4(
    staged: *const u8,
    weights: *const u8,
    bias: *const u8,
    groups: usize,
    channels: usize,
    out: *mut u8,
) {
    let nine_end = staged.wrapping_add(groups / 9 * 9 * 4 * GROUP_BYTES);
    let end = staged.wrapping_add(groups * 4 * GROUP_BYTES);
    // SAFETY: the caller checked that `staged` (word-aligned, as `LDM` needs) holds
    // `groups ≥ 1` groups of four pixels, `weights` `4 · groups` bytes for each of the
    // `channels ≥ 1` channels, `bias` a word per channel, and `out` (word-aligned, as
    // `STM` needs) four words per channel. The block reads exactly those and writes
    // exactly `out`. The six words it pushes are popped before it ends; every register
    // it writes is declared.
    unsafe {
        core::arch::asm!(
            "push {{r0, r1, r2, r3, r4, r12}}",
            // [sp]: nine_end, [sp, #4]: end, [sp, #8]: bias, [sp, #12]: out,
            // [sp, #16]: channels left, [sp, #20]: staged.
            "1:",
            "ldr r10, [sp, #8]",
            "ldr r4, [r10], #4",
            "str r10, [sp, #8]",
            "mov r5, r4",
            "mov r8, r4",
            "mov r9, r4",
            "ldr r12, [sp, #20]",
            "ldr r11, [sp]",
            "cmp r12, r11",
            "beq 3f",
            "2:",
            group4!(), group4!(), group4!(),
            group4!(), group4!(), group4!(),
            group4!(), group4!(), group4!(),
            "ldr r11, [sp]",
            "cmp r12, r11",
            "bne 2b",
            "3:",
            "ldr r11, [sp, #4]",
            "cmp r12, r11",
            "beq 5f",
            "4:",
            group4!(),
            "ldr r11, [sp, #4]",
            "cmp r12, r11",
            "bne 4b",
            "5:",
            "ldr r10, [sp, #12]",
            "stmia r10!, {{r4, r5, r8, r9}}",
            "str r10, [sp, #12]",
            "ldr r10, [sp, #16]",
            "subs r10, r10, #1",
            "str r10, [sp, #16]",
            "bne 1b",
            "add sp, sp, #24",
            inout("r0") nine_end => _, inout("r1") end => _, inout("r2") bias => _,
            inout("r3") out => _, inout("r4") channels => _,
            out("r5") _, out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            inout("r12") staged => _, inout("lr") weights => _,
        );
    }
}

/// `Σ w·x` over the groups of one staged pixel (`x`: two words per group, word-aligned
/// on the device) and its weights `w` (a word per group): a dense layer's row.
pub(super) fn dot(x: &[u8], w: &[u8]) -> i32 {
    let groups = (x.len() / GROUP_BYTES).min(w.len() / 4);
    #[cfg(spartan_dsp)]
    if groups > 0 && (x.as_ptr() as usize).is_multiple_of(4) {
        let mut sum = 0i32;
        let end = x.as_ptr().wrapping_add(groups * GROUP_BYTES);
        // SAFETY: `x` holds `8 · groups` readable word-aligned bytes (as `LDM` needs)
        // and `w` `4 · groups`; the loop reads exactly those and stops when the input
        // pointer reaches `end`.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldr {w}, [{wp}], #4",
                "sxtb16 {t}, {w}, ror #8",
                "sxtb16 {w}, {w}",
                "ldm {xp}!, {{r0, r1}}",
                "smlad {s}, r0, {w}, {s}",
                "smlad {s}, r1, {t}, {s}",
                "cmp {xp}, {end}",
                "bne 2b",
                xp = inout(reg) x.as_ptr() => _, wp = inout(reg) w.as_ptr() => _,
                end = in(reg) end, s = inout(reg) sum, w = out(reg) _, t = out(reg) _,
                out("r0") _, out("r1") _,
                options(readonly, nostack),
            );
        }
        return sum;
    }
    let mut sum = 0i32;
    for (g, wq) in x
        .chunks_exact(GROUP_BYTES)
        .zip(w.chunks_exact(4))
        .take(groups)
    {
        sum = mac_group([staged_word(g, 0), staged_word(g, 1)], weight_word(wq), sum);
    }
    sum
}

/// Bytes between one pixel's staged groups: four pixels' two words each.
const STRIDE: usize = 4 * GROUP_BYTES;

/// Widens `src` (whole words of four `u8` inputs) into `dst`, one group of two words
/// per `STRIDE` bytes (see [`widen`]); the zero point in both halves of `zp2`.
pub(super) fn widen_run(src: &[u8], zp2: u32, dst: &mut [u8]) {
    let groups = (src.len() / 4).min((dst.len() + STRIDE - GROUP_BYTES) / STRIDE);
    #[cfg(spartan_dsp)]
    if groups > 0 && (dst.as_ptr() as usize).is_multiple_of(4) {
        let end = src.as_ptr().wrapping_add(4 * groups);
        // SAFETY: `src` has `4 · groups` readable bytes and `dst` (word-aligned, as
        // `STRD` needs) room for `groups` groups `STRIDE` bytes apart; the loop stops
        // when the source pointer reaches `end`.
        unsafe {
            if zp2 == 0 {
                core::arch::asm!(
                    "2:",
                    "ldr {q}, [{s}], #4",
                    "uxtb16 {e}, {q}",
                    "uxtb16 {o}, {q}, ror #8",
                    "strd {e}, {o}, [{d}], #{stride}",
                    "cmp {s}, {end}",
                    "bne 2b",
                    s = inout(reg) src.as_ptr() => _, d = inout(reg) dst.as_mut_ptr() => _,
                    end = in(reg) end, q = out(reg) _, e = out(reg) _, o = out(reg) _,
                    stride = const STRIDE, options(nostack),
                );
            } else {
                core::arch::asm!(
                    "2:",
                    "ldr {q}, [{s}], #4",
                    "uxtb16 {e}, {q}",
                    "uxtb16 {o}, {q}, ror #8",
                    "ssub16 {e}, {e}, {z}",
                    "ssub16 {o}, {o}, {z}",
                    "strd {e}, {o}, [{d}], #{stride}",
                    "cmp {s}, {end}",
                    "bne 2b",
                    s = inout(reg) src.as_ptr() => _, d = inout(reg) dst.as_mut_ptr() => _,
                    end = in(reg) end, z = in(reg) zp2, q = out(reg) _, e = out(reg) _,
                    o = out(reg) _, stride = const STRIDE, options(nostack),
                );
            }
        }
        return;
    }
    for (quad, group) in src.chunks_exact(4).zip(dst.chunks_mut(STRIDE)).take(groups) {
        let [even, odd] = widen(weight_word(quad), zp2);
        group[..4].copy_from_slice(&even.to_le_bytes());
        group[4..GROUP_BYTES].copy_from_slice(&odd.to_le_bytes());
    }
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
