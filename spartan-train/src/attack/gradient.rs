//! White-box gradient attacks: FGSM and PGD (ℓ∞), with BPDA through steps.
//!
//! The network's `grad_mode` decides how a Heaviside is differentiated: its surrogate
//! (the adaptive attack, default) or the identity.

use crate::nn::loss::cross_entropy_row;
use crate::nn::network::Want;
use crate::nn::Network;
use rand::Rng;

/// `sign` as NumPy and CleverHans define it: 0 for 0 (Rust's `signum(0.0)` is 1).
#[inline]
pub fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Gradient of the cross-entropy of each image against its target class, with respect
/// to the image (`n × input_len`).
pub fn loss_input_grads(net: &mut Network, x: &[f32], targets: &[u8]) -> Vec<f32> {
    let want = Want {
        params: false,
        input: true,
        regularize: false,
    };
    net.backprop(x, targets.len(), want, |i, row, g| {
        cross_entropy_row(row, targets[i] as usize, 1.0, g)
    });
    net.input_grads().to_vec()
}

/// FGSM: `x' = clip(x + ε·sign(∇x L(x, target)), 0, 1)`.
pub fn fgsm(net: &mut Network, x: &[f32], targets: &[u8], eps: f32) -> Vec<f32> {
    let g = loss_input_grads(net, x, targets);
    x.iter()
        .zip(&g)
        .map(|(&xi, &gi)| (xi + eps * sign(gi)).clamp(0.0, 1.0))
        .collect()
}

/// PGD settings (ℓ∞).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PgdConfig {
    /// Radius.
    pub eps: f32,
    /// Step size.
    pub step: f32,
    /// Number of steps.
    pub steps: usize,
    /// Start from a uniform random point of the ε-ball.
    pub random_start: bool,
}

impl PgdConfig {
    /// The usual setting: `steps` steps of `2.5·ε/steps`, random start.
    pub fn standard(eps: f32, steps: usize) -> Self {
        PgdConfig {
            eps,
            step: 2.5 * eps / steps.max(1) as f32,
            steps,
            random_start: true,
        }
    }
}

/// Projected gradient descent on the loss (ascent), projected on the ε-ball and `[0, 1]`.
pub fn pgd(
    net: &mut Network,
    x: &[f32],
    targets: &[u8],
    cfg: PgdConfig,
    rng: &mut impl Rng,
) -> Vec<f32> {
    let project = |xi: f32, v: f32| v.clamp(xi - cfg.eps, xi + cfg.eps).clamp(0.0, 1.0);
    let mut adv: Vec<f32> = if cfg.random_start && cfg.eps > 0.0 {
        x.iter()
            .map(|&xi| project(xi, xi + rng.random_range(-cfg.eps..=cfg.eps)))
            .collect()
    } else {
        x.to_vec()
    };
    for _ in 0..cfg.steps {
        let g = loss_input_grads(net, &adv, targets);
        for ((a, &xi), &gi) in adv.iter_mut().zip(x).zip(&g) {
            *a = project(xi, *a + cfg.step * sign(gi));
        }
    }
    adv
}
