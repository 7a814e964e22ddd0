//! White-box gradient attacks: FGSM and PGD (ℓ∞), with BPDA through steps.
//!
//! The network's `grad_mode` decides how a Heaviside is differentiated: its surrogate
//! (the adaptive attack, default) or the identity.

use crate::nn::loss::cross_entropy_row;
use crate::nn::network::Want;
use crate::nn::Network;
use rand::Rng;
use spartan_core::float::argmax;

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
    /// Freeze an image as soon as it is misclassified (the attack has won on it):
    /// the usual shortcut of attack libraries, which only ever lowers accuracy and
    /// saves most of the work on weak models.
    pub early_stop: bool,
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
            early_stop: true,
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
    let len = net.input_len();
    let classes = net.classes();
    // Images still being attacked.
    let mut active: Vec<usize> = (0..targets.len()).collect();
    let mut xa = Vec::new();
    let mut ta = Vec::new();
    for _ in 0..cfg.steps {
        if active.is_empty() {
            break;
        }
        xa.clear();
        ta.clear();
        for &i in &active {
            xa.extend_from_slice(&adv[i * len..(i + 1) * len]);
            ta.push(targets[i]);
        }
        let g = loss_input_grads(net, &xa, &ta);
        let logits = net.logits();
        let mut still = Vec::with_capacity(active.len());
        for (j, &i) in active.iter().enumerate() {
            // The gradient pass also classified the current iterate.
            let won = argmax(&logits[j * classes..(j + 1) * classes]) != ta[j] as usize;
            if cfg.early_stop && won {
                continue;
            }
            let span = i * len..(i + 1) * len;
            for ((a, &xi), &gi) in adv[span.clone()]
                .iter_mut()
                .zip(&x[span])
                .zip(&g[j * len..(j + 1) * len])
            {
                *a = project(xi, *a + cfg.step * sign(gi));
            }
            still.push(i);
        }
        active = still;
    }
    adv
}
