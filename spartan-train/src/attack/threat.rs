//! The threat model: where an ℓ∞ adversary may move each input value, in real numbers
//! or on the `u8` pixel grid a device sees.
//!
//! Every attack projects with [`ball`] and every test checks against it, so "inside
//! the ε-ball" means one thing, computed in `f32` exactly as written here.

use ndarray::{Array4, ArrayView4, Zip};
use spartan_core::filter::pixel_to_unit;

/// The values an adversary may give an input value `x` with budget `eps`:
/// `[x − ε, x + ε] ∩ [0, 1]`, as `(lo, hi)` (`f32` arithmetic).
#[inline]
pub fn ball(x: f32, eps: f32) -> (f32, f32) {
    ((x - eps).max(0.0), (x + eps).min(1.0))
}

/// `v` projected on the ball around `x`.
#[inline]
pub fn project(x: f32, eps: f32, v: f32) -> f32 {
    let (lo, hi) = ball(x, eps);
    v.clamp(lo, hi)
}

/// Where adversarial images live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Grid {
    /// Any `f32` in the ball.
    Real,
    /// Raw pixels `p / 255` in the ball: what a microcontroller reading `u8` pixels sees.
    U8,
}

/// The raw pixels `p` whose value `p / 255` lies in the ball around `x`, as an
/// inclusive range; `None` when there is none (only possible for an `x` off the grid
/// with a budget under half a grid step).
pub fn pixel_ball(x: f32, eps: f32) -> Option<(u8, u8)> {
    let (lo, hi) = ball(x, eps);
    let inside = |p: u8| (lo..=hi).contains(&pixel_to_unit(p));
    // `pixel_to_unit` is monotone: start at the nearest candidates and step inward.
    let mut a = (lo * 255.0).floor().clamp(0.0, 255.0) as u8;
    while !inside(a) && a < 255 && pixel_to_unit(a) < lo {
        a += 1;
    }
    let mut b = (hi * 255.0).ceil().clamp(0.0, 255.0) as u8;
    while !inside(b) && b > 0 && pixel_to_unit(b) > hi {
        b -= 1;
    }
    (inside(a) && inside(b) && a <= b).then_some((a, b))
}

/// `v` rounded to the nearest raw pixel in the ball around `x` (the device's view of an
/// adversarial value); `v` itself when the ball holds no pixel.
pub fn round_to_pixel(x: f32, eps: f32, v: f32) -> f32 {
    match pixel_ball(x, eps) {
        Some((a, b)) => pixel_to_unit((v * 255.0).round().clamp(f32::from(a), f32::from(b)) as u8),
        None => v,
    }
}

/// Adversarial images `adv` of clean images `x` rounded to the `u8` grid inside the ball.
pub fn round_images(x: ArrayView4<'_, f32>, adv: ArrayView4<'_, f32>, eps: f32) -> Array4<f32> {
    let mut out = adv.to_owned();
    Zip::from(&mut out)
        .and(x)
        .for_each(|v, &xi| *v = round_to_pixel(xi, eps, *v));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_balls_hold_exactly_the_pixels_inside_the_real_ball() {
        for eps in [0.0f32, 0.001, 0.03, 0.1, 0.2, 0.3, 0.57, 1.0] {
            for p in (0..=255u8).step_by(7) {
                let x = pixel_to_unit(p);
                let (lo, hi) = ball(x, eps);
                let (a, b) = pixel_ball(x, eps).expect("x itself is a pixel");
                for q in 0..=255u8 {
                    let inside = (lo..=hi).contains(&pixel_to_unit(q));
                    assert_eq!(inside, (a..=b).contains(&q), "eps {eps} p {p} q {q}");
                }
            }
        }
        // ε = 0.1 is 25.5 grid steps: 25 either way.
        assert_eq!(pixel_ball(pixel_to_unit(100), 0.1), Some((75, 125)));
        assert_eq!(pixel_ball(0.5 / 255.0, 0.001), None);
    }

    #[test]
    fn rounding_stays_in_the_ball_and_on_the_grid() {
        let x = pixel_to_unit(100);
        let r = round_to_pixel(x, 0.1, x + 0.1);
        assert_eq!(r, pixel_to_unit(125), "126 would leave the ball");
        assert_eq!(round_to_pixel(x, 0.1, x + 0.021), pixel_to_unit(105));
        assert_eq!(round_to_pixel(pixel_to_unit(3), 0.3, 0.0), 0.0);
    }
}
