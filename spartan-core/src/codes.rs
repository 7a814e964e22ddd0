//! Which filter outputs ("codes") an input interval can reach — exactly, in `f32`.
//!
//! A filtering layer acts on each input element alone: element `x` becomes the code
//! `Σ_k f_k(w_k·x + b_k) << k` of its β units. An adversary who may move `x` anywhere in
//! `[x − ε, x + ε] ∩ [0, 1]` can therefore only choose among the few codes that interval
//! reaches, and a verifier only has to consider those. Both need the answer to be
//! *exact for the floats the network really computes*, not for real numbers: a
//! threshold at `x = 0.4` is wherever `fl(w·x + b)` changes sign, and that is what
//! [`CodeSegments`] finds (by bisection over the floats, using the very expression the
//! float and bit-table paths use).
//!
//! On the `u8` grid a device sees, the same question is answered by evaluating the
//! units at each pixel value ([`Unit::fires_on_pixel`]).

use crate::activation::Activation;
use crate::filter::{pixel_to_unit, unit_preactivation, FilterKind, FilterSpec};
use core::f64::consts::{FRAC_PI_2, PI};

/// One single-input filtering unit, `f(w·x + b)` with a binary activation `f`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Unit {
    /// A binary (step-type or cosine-type) activation.
    pub activation: Activation,
    /// Weight (1 for Offset-Filtering).
    pub w: f32,
    /// Bias.
    pub b: f32,
}

impl Unit {
    /// Whether the unit is on for input `x`, computed exactly as the float path does.
    #[inline]
    pub fn fires(&self, x: f32) -> bool {
        self.activation
            .forward(unit_preactivation(self.w, x, self.b))
            > 0.0
    }

    /// Whether the unit is on for raw pixel `p` (the bit-table value).
    #[inline]
    pub fn fires_on_pixel(&self, p: u8) -> bool {
        self.fires(pixel_to_unit(p))
    }

    /// The first float in `(x, hi]` where the unit's output differs from its output at
    /// `x`, or `None` if it keeps it on the whole stretch.
    fn next_switch(&self, x: f32, hi: f32) -> Option<f32> {
        let on = self.fires(x);
        let mut from = x;
        loop {
            let bracket = self.bracket(from, hi);
            if self.fires(bracket) != on {
                return Some(self.bisect(from, bracket, on));
            }
            if bracket >= hi {
                return None;
            }
            // No crossing before `bracket` (the crossing was past `hi` or too close to
            // `from` to bracket): go on from there.
            from = bracket;
        }
    }

    /// A float after `x` (at most `hi`) such that the unit's output changes at most
    /// once in `(x, bracket]`.
    ///
    /// `fl(w·x + b)` is monotone in `x`, so the output can only change where the
    /// pre-activation crosses a switching point of `f`: 0 for a step (once at most, so
    /// `hi` will do), π/2 + mπ for a cosine (π apart: half a period past the next
    /// crossing will do, as long as one float step of `x` moves `w·x` by less than π/2,
    /// i.e. for any weight a trained filter has).
    fn bracket(&self, x: f32, hi: f32) -> f32 {
        if !self.activation.is_cosine() || self.w == 0.0 {
            return hi;
        }
        let z0 = f64::from(unit_preactivation(self.w, x, self.b));
        let up = self.w > 0.0;
        let m = libm::floor((z0 - FRAC_PI_2) / PI);
        let crossing = FRAC_PI_2 + PI * if up { m + 1.0 } else { m };
        let past = crossing + if up { 0.5 } else { -0.5 };
        // The float nearest the target may fall just short of it: step outward.
        let xb = next_up(((past - f64::from(self.b)) / f64::from(self.w)) as f32);
        if xb.is_nan() || xb >= hi {
            hi
        } else if xb <= x {
            next_up(x)
        } else {
            xb
        }
    }

    /// The first float in `(lo, up]` whose output differs from `on`, given
    /// `fires(lo) == on`, `fires(up) != on` and a single change in between.
    fn bisect(&self, mut lo: f32, mut up: f32, on: bool) -> f32 {
        while next_up(lo) < up {
            let mid = mid_float(lo, up);
            if self.fires(mid) == on {
                lo = mid;
            } else {
                up = mid;
            }
        }
        up
    }
}

/// Most units a code holds (bits of a `u32`).
pub const MAX_UNITS: usize = 32;

/// The units that act on input element `element` (an HWC index) of a filtering layer
/// with `channels` input channels and parameters `weight` / `bias` (shapes as in
/// `LayerSpec::params`), in code-bit order. `None` when the layer does not act on
/// elements one at a time (Conv-Filtering of several channels), has more than
/// [`MAX_UNITS`] units per element, or the parameters are too short.
pub fn element_units(
    spec: &FilterSpec,
    weight: &[f32],
    bias: &[f32],
    channels: usize,
    element: usize,
) -> Option<heapless::Vec<Unit, MAX_UNITS>> {
    let beta = spec.beta as usize;
    if beta > MAX_UNITS {
        return None;
    }
    let unit = |w: f32, b: f32| Unit {
        activation: spec.activation,
        w,
        b,
    };
    match spec.kind {
        // Bias `[H, W, C·β]`: element `e` owns outputs `e·β .. e·β + β`, weight 1.
        FilterKind::Offset => bias
            .get(element * beta..(element + 1) * beta)
            .map(|bs| bs.iter().map(|&b| unit(1.0, b)).collect()),
        // Weight `[C, β]`, bias `[β]`: shared by every pixel of a single channel.
        FilterKind::Conv if channels == 1 => (weight.len() >= beta && bias.len() >= beta)
            .then(|| (0..beta).map(|k| unit(weight[k], bias[k])).collect()),
        FilterKind::Conv => None,
    }
}

/// The code of input `x`: bit `k` is unit `k` (at most 32 units).
pub fn code_of(units: &[Unit], x: f32) -> u32 {
    units
        .iter()
        .enumerate()
        .fold(0, |c, (k, u)| c | (u32::from(u.fires(x)) << k))
}

/// A maximal stretch of floats `[lo, hi]` on which the code is constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CodeSegment {
    /// First float of the stretch.
    pub lo: f32,
    /// Last float of the stretch.
    pub hi: f32,
    /// The code every float of the stretch gives.
    pub code: u32,
}

impl CodeSegment {
    /// The float of the stretch nearest `x` (what an attacker moves `x` to, to get this
    /// code with the least change).
    pub fn nearest(&self, x: f32) -> f32 {
        x.clamp(self.lo, self.hi)
    }
}

/// The segments of constant code covering `[lo, hi]`, in increasing order; consecutive
/// segments have different codes. Every float of a segment gives exactly its code under
/// [`code_of`] (proved by the monotonicity of `fl(w·x + b)`; see the module docs).
#[derive(Clone, Debug)]
pub struct CodeSegments<'u> {
    units: &'u [Unit],
    next: Option<f32>,
    hi: f32,
}

impl<'u> CodeSegments<'u> {
    /// Segments of `[lo, hi]` (empty if `lo > hi` or either is NaN).
    pub fn new(units: &'u [Unit], lo: f32, hi: f32) -> Self {
        CodeSegments {
            units,
            next: (lo <= hi).then_some(lo),
            hi,
        }
    }
}

impl Iterator for CodeSegments<'_> {
    type Item = CodeSegment;

    fn next(&mut self) -> Option<CodeSegment> {
        let lo = self.next?;
        let code = code_of(self.units, lo);
        // The code changes where the first unit switches. Units that switch together
        // change the code once; a switch that restores the same code cannot happen at
        // the same float, since each unit changes only there.
        let switch = self
            .units
            .iter()
            .filter_map(|u| u.next_switch(lo, self.hi))
            .fold(None, |m: Option<f32>, s| Some(m.map_or(s, |m| m.min(s))));
        let hi = match switch {
            Some(s) => {
                self.next = Some(s);
                next_down(s)
            }
            None => {
                self.next = None;
                self.hi
            }
        };
        Some(CodeSegment { lo, hi, code })
    }
}

/// Distinct codes reachable by raw pixels `p_lo..=p_hi` (the `u8` grid), as a bit set
/// over codes `0..256` (β ≤ 8 units), with one pixel value producing each.
pub fn pixel_codes(units: &[Unit], p_lo: u8, p_hi: u8, mut visit: impl FnMut(u32, u8)) {
    let mut seen = [0u32; 8];
    for p in p_lo..=p_hi {
        let code = units
            .iter()
            .enumerate()
            .fold(0u32, |c, (k, u)| c | (u32::from(u.fires_on_pixel(p)) << k));
        let (word, bit) = ((code as usize >> 5) & 7, code & 31);
        if seen[word] & (1 << bit) == 0 {
            seen[word] |= 1 << bit;
            visit(code, p);
        }
    }
}

/// Every code raw pixels `p_lo..=p_hi` reach, each with the pixel nearest to `p` that
/// gives it (the lower one on a tie), visited nearest first — so the first visit is
/// `p`'s own code when `p` lies in the range. What a verifier needs to turn a code back
/// into the smallest change of the image; unlike [`pixel_codes`] it takes any number of
/// units up to [`MAX_UNITS`].
pub fn nearest_pixel_codes(
    units: &[Unit],
    p: u8,
    p_lo: u8,
    p_hi: u8,
    mut visit: impl FnMut(u32, u8),
) {
    if p_lo > p_hi {
        return;
    }
    let p = p.clamp(p_lo, p_hi);
    let mut seen = heapless::Vec::<u32, 256>::new();
    for d in 0..=255u8 {
        let below = p.checked_sub(d).filter(|&q| q >= p_lo);
        let above = p.checked_add(d).filter(|&q| q <= p_hi && d > 0);
        if below.is_none() && above.is_none() {
            break;
        }
        for q in below.into_iter().chain(above) {
            let code = code_of(units, pixel_to_unit(q));
            if !seen.contains(&code) {
                // At most 256 pixel values, so at most 256 codes: the push fits.
                let _ = seen.push(code);
                visit(code, q);
            }
        }
    }
}

/// Every code the floats of `[lo, hi]` reach, each with the float of its segments
/// nearest to `x` (the lower one on a tie), visited nearest first: the real-valued
/// counterpart of [`nearest_pixel_codes`], built on [`CodeSegments`]. Returns `false`,
/// having visited nothing, if the interval reaches more than [`MAX_CODES`] codes.
#[must_use]
pub fn nearest_codes(
    units: &[Unit],
    x: f32,
    lo: f32,
    hi: f32,
    mut visit: impl FnMut(u32, f32),
) -> bool {
    // (code, representative, distance); a code may own several segments (cosines).
    let mut best = heapless::Vec::<(u32, f32, f64), MAX_CODES>::new();
    for seg in CodeSegments::new(units, lo, hi) {
        let v = seg.nearest(x);
        let d = (f64::from(v) - f64::from(x)).abs();
        match best.iter_mut().find(|b| b.0 == seg.code) {
            Some(b) => {
                if d < b.2 {
                    *b = (seg.code, v, d);
                }
            }
            None => {
                if best.push((seg.code, v, d)).is_err() {
                    return false;
                }
            }
        }
    }
    best.sort_unstable_by(|a, b| a.2.total_cmp(&b.2).then(a.1.total_cmp(&b.1)));
    for (code, v, _) in best {
        visit(code, v);
    }
    true
}

/// Most distinct codes [`nearest_codes`] collects for one interval.
pub const MAX_CODES: usize = 256;

/// Maps a float to an integer with the same order (−0.0 and 0.0 adjacent).
fn ordered(x: f32) -> i64 {
    let b = x.to_bits() as i32;
    i64::from(if b < 0 { i32::MIN - b } else { b })
}

fn from_ordered(v: i64) -> f32 {
    let b = v as i32;
    f32::from_bits((if b < 0 { i32::MIN - b } else { b }) as u32)
}

/// The float halfway (in order) between `a < b`.
fn mid_float(a: f32, b: f32) -> f32 {
    let (x, y) = (ordered(a), ordered(b));
    from_ordered(x + (y - x) / 2)
}

/// The next float above `x` (`x` finite).
fn next_up(x: f32) -> f32 {
    from_ordered(ordered(x) + 1)
}

/// The next float below `x` (`x` finite).
fn next_down(x: f32) -> f32 {
    from_ordered(ordered(x) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::XorShift;

    fn random_units(rng: &mut XorShift, beta: usize) -> heapless::Vec<Unit, 8> {
        let acts = [
            Activation::Hsat,
            Activation::Hsid,
            Activation::Hsnd { sigma: 1.0 },
            Activation::CosHsat,
            Activation::CosHsnd { sigma: 0.5 },
        ];
        let act = acts[rng.below(acts.len())];
        (0..beta)
            .map(|_| {
                let (w, b) = if act.is_cosine() {
                    (rng.uniform(-25.0, 25.0), rng.uniform(-7.0, 7.0))
                } else {
                    (rng.uniform(-3.0, 3.0), rng.uniform(-2.0, 2.0))
                };
                Unit {
                    activation: act,
                    w,
                    b,
                }
            })
            .collect()
    }

    #[test]
    fn segments_cover_the_interval_and_every_float_has_its_segment_code() {
        let mut rng = XorShift(0xc0de_5e95_0000_0001);
        for _ in 0..300 {
            let beta = 1 + rng.below(6);
            let units = random_units(&mut rng, beta);
            let (a, b) = (rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0));
            let (lo, hi) = (a.min(b), a.max(b));
            let segs: heapless::Vec<CodeSegment, 256> = CodeSegments::new(&units, lo, hi).collect();
            assert_eq!(segs.first().map(|s| s.lo), Some(lo));
            assert_eq!(segs.last().map(|s| s.hi), Some(hi));
            for w in segs.windows(2) {
                assert_eq!(next_up(w[0].hi), w[1].lo, "segments are contiguous");
                assert_ne!(w[0].code, w[1].code, "segments are maximal");
            }
            for s in &segs {
                // Both ends (the exact switching floats) and sampled interior floats.
                assert_eq!(code_of(&units, s.lo), s.code);
                assert_eq!(code_of(&units, s.hi), s.code);
                for _ in 0..20 {
                    let x = rng.uniform(s.lo, s.hi).clamp(s.lo, s.hi);
                    assert_eq!(code_of(&units, x), s.code, "{units:?} {s:?} x={x}");
                }
            }
        }
    }

    #[test]
    fn dense_sampling_finds_no_code_outside_the_segments() {
        // Walk every 97th float of a stretch: no code appears that no segment names.
        let mut rng = XorShift(0x5eed_0bad_c0de_0002);
        for _ in 0..40 {
            let units = random_units(&mut rng, 4);
            let (lo, hi) = (0.3f32, 0.5f32);
            let segs: heapless::Vec<CodeSegment, 256> = CodeSegments::new(&units, lo, hi).collect();
            let mut v = ordered(lo);
            while v <= ordered(hi) {
                let x = from_ordered(v);
                let s = segs
                    .iter()
                    .find(|s| s.lo <= x && x <= s.hi)
                    .expect("covered");
                assert_eq!(code_of(&units, x), s.code);
                v += 97;
            }
        }
    }

    #[test]
    fn step_threshold_is_the_exact_float() {
        // On iff x > 0.4 in f32 arithmetic: the switch is the first float above 0.4.
        let u = [Unit {
            activation: Activation::Hsat,
            w: 1.0,
            b: -0.4,
        }];
        let segs: heapless::Vec<CodeSegment, 4> = CodeSegments::new(&u, 0.0, 1.0).collect();
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].code, 0);
        assert_eq!(segs[1].code, 1);
        assert!(!u[0].fires(segs[0].hi) && u[0].fires(segs[1].lo));
        assert_eq!(next_up(segs[0].hi), segs[1].lo);
        assert!((segs[1].lo - 0.4).abs() < 1e-6);
    }

    #[test]
    fn element_units_follow_the_parameter_layouts() {
        let spec = |kind| FilterSpec {
            kind,
            beta: 2,
            activation: Activation::Hsat,
            sf: 0.0,
        };
        let conv = element_units(&spec(FilterKind::Conv), &[2.0, 3.0], &[-1.0, -2.0], 1, 7)
            .expect("single channel");
        assert_eq!((conv[1].w, conv[1].b), (3.0, -2.0));
        assert!(element_units(&spec(FilterKind::Conv), &[1.0; 4], &[0.0; 2], 2, 0).is_none());
        let bias = [-0.1, -0.2, -0.3, -0.4, -0.5, -0.6];
        let off = element_units(&spec(FilterKind::Offset), &[], &bias, 1, 1).expect("offset");
        assert_eq!((off[0].w, off[0].b, off[1].b), (1.0, -0.3, -0.4));
        assert!(element_units(&spec(FilterKind::Offset), &[], &bias, 1, 3).is_none());
    }

    #[test]
    fn nearest_pixel_codes_name_every_code_once_with_its_nearest_pixel() {
        let mut rng = XorShift(0x0dd5_eed5_0000_0003);
        for _ in 0..60 {
            let beta = 1 + rng.below(6);
            let units = random_units(&mut rng, beta);
            let (a, b) = (rng.below(256) as u8, rng.below(256) as u8);
            let (lo, hi) = (a.min(b), a.max(b));
            let p = lo + (rng.below(usize::from(hi - lo) + 1) as u8);
            let mut found = heapless::Vec::<(u32, u8), 64>::new();
            nearest_pixel_codes(&units, p, lo, hi, |c, q| {
                found.push((c, q)).expect("few codes");
            });
            assert_eq!(found[0], (code_of(&units, pixel_to_unit(p)), p));
            // Brute force: every pixel's code is named, by a pixel at least as near.
            for q in lo..=hi {
                let c = code_of(&units, pixel_to_unit(q));
                let &(_, r) = found.iter().find(|f| f.0 == c).expect("code named");
                assert!(r.abs_diff(p) <= q.abs_diff(p), "{c}: {r} vs {q}");
                assert_eq!(code_of(&units, pixel_to_unit(r)), c);
            }
            assert!(found
                .windows(2)
                .all(|w| w[0].1.abs_diff(p) <= w[1].1.abs_diff(p)));
            let codes: heapless::Vec<u32, 64> = found.iter().map(|f| f.0).collect();
            assert!(codes
                .iter()
                .enumerate()
                .all(|(i, c)| !codes[..i].contains(c)));
        }
    }

    #[test]
    fn nearest_codes_agree_with_the_segments() {
        let mut rng = XorShift(0x0dd5_eed5_0000_0004);
        for _ in 0..60 {
            let beta = 1 + rng.below(5);
            let units = random_units(&mut rng, beta);
            let (a, b) = (rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0));
            let (lo, hi) = (a.min(b), a.max(b));
            let x = rng.uniform(lo, hi).clamp(lo, hi);
            let mut found = heapless::Vec::<(u32, f32), 64>::new();
            assert!(nearest_codes(&units, x, lo, hi, |c, v| {
                found.push((c, v)).expect("few codes");
            }));
            assert_eq!(found[0], (code_of(&units, x), x));
            let segs: heapless::Vec<CodeSegment, 256> = CodeSegments::new(&units, lo, hi).collect();
            for s in &segs {
                let &(_, v) = found.iter().find(|f| f.0 == s.code).expect("code named");
                assert!((v - x).abs() <= (s.nearest(x) - x).abs());
            }
            for &(c, v) in &found {
                assert!((lo..=hi).contains(&v));
                assert_eq!(code_of(&units, v), c);
            }
        }
    }

    #[test]
    fn pixel_codes_match_bit_tables() {
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        for _ in 0..50 {
            let units = random_units(&mut rng, 4);
            let (a, b) = (rng.below(256) as u8, rng.below(256) as u8);
            let (lo, hi) = (a.min(b), a.max(b));
            let mut found = heapless::Vec::<(u32, u8), 16>::new();
            pixel_codes(&units, lo, hi, |c, p| {
                let _ = found.push((c, p));
            });
            for p in lo..=hi {
                let c = code_of(&units, pixel_to_unit(p));
                assert!(found.iter().any(|&(fc, _)| fc == c), "pixel {p} code {c}");
            }
            for &(c, p) in &found {
                assert!((lo..=hi).contains(&p));
                assert_eq!(code_of(&units, pixel_to_unit(p)), c);
            }
        }
    }
}
