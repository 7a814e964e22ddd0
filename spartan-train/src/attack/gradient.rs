//! White-box gradient attacks: FGSM and PGD (ℓ∞), with BPDA through steps
//! (docs/attacks.md).
//!
//! Each call says how a Heaviside is differentiated ([`GradMode`]): its surrogate (the
//! adaptive attack, default), the identity, or its true (zero) derivative.

use crate::nn::loss::cross_entropy_row;
use crate::nn::{GradMode, Network, Pass, Workspace};
use ndarray::{Array4, ArrayView1, ArrayView2, ArrayView4, ArrayViewMut1, Axis, Zip};
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

/// Forward and backward of the cross-entropy of each image against its target class:
/// the logits and the gradient with respect to each image, in `ws`.
fn loss_gradient<'w>(
    net: &Network,
    ws: &'w mut Workspace,
    x: ArrayView4<'_, f32>,
    targets: &[u8],
    grad: GradMode,
) -> (ArrayView2<'w, f32>, ArrayView4<'w, f32>) {
    let pass = Pass::input_gradient(net, grad);
    let upstream = |i: usize, row: ArrayView1<'_, f32>, g: ArrayViewMut1<'_, f32>| {
        cross_entropy_row(row, targets[i] as usize, 1.0, g)
    };
    net.backward(x, &pass, upstream, ws, None)
        .with_input_grads()
}

/// Gradient of the cross-entropy of each image against its target class, with respect
/// to the image; steps differentiated as `grad` says.
pub fn loss_input_grads(
    net: &Network,
    ws: &mut Workspace,
    x: ArrayView4<'_, f32>,
    targets: &[u8],
    grad: GradMode,
) -> Array4<f32> {
    loss_gradient(net, ws, x, targets, grad).1.to_owned()
}

/// FGSM: `x' = clip(x + ε·sign(∇x L(x, target)), 0, 1)`.
pub fn fgsm(
    net: &Network,
    ws: &mut Workspace,
    x: ArrayView4<'_, f32>,
    targets: &[u8],
    eps: f32,
    grad: GradMode,
) -> Array4<f32> {
    let (_, g) = loss_gradient(net, ws, x, targets, grad);
    let mut adv = x.to_owned();
    adv.zip_mut_with(&g, |xi, &gi| *xi = (*xi + eps * sign(gi)).clamp(0.0, 1.0));
    adv
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
    /// How steps are differentiated (BPDA).
    pub grad: GradMode,
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
            grad: GradMode::Surrogate,
        }
    }
}

/// Projected gradient descent on the loss (ascent), projected on the ε-ball and `[0, 1]`.
pub fn pgd(
    net: &Network,
    ws: &mut Workspace,
    x: ArrayView4<'_, f32>,
    targets: &[u8],
    cfg: PgdConfig,
    rng: &mut impl Rng,
) -> Array4<f32> {
    let project = |xi: f32, v: f32| v.clamp(xi - cfg.eps, xi + cfg.eps).clamp(0.0, 1.0);
    let mut adv = x.to_owned();
    if cfg.random_start && cfg.eps > 0.0 {
        adv.mapv_inplace(|xi| project(xi, xi + rng.random_range(-cfg.eps..=cfg.eps)));
    }
    // Images still being attacked.
    let mut active: Vec<usize> = (0..targets.len()).collect();
    for _ in 0..cfg.steps {
        if active.is_empty() {
            break;
        }
        let xa = adv.select(Axis(0), &active);
        let ta: Vec<u8> = active.iter().map(|&i| targets[i]).collect();
        let (logits, g) = loss_gradient(net, ws, xa.view(), &ta, cfg.grad);
        let mut still = Vec::with_capacity(active.len());
        for (j, &i) in active.iter().enumerate() {
            // The gradient pass also classified the current iterate.
            let won = argmax(logits.row(j).as_slice().unwrap_or(&[])) != ta[j] as usize;
            if cfg.early_stop && won {
                continue;
            }
            let mut a = adv.index_axis_mut(Axis(0), i);
            Zip::from(&mut a)
                .and(x.index_axis(Axis(0), i))
                .and(g.index_axis(Axis(0), j))
                .for_each(|a, &xi, &gi| *a = project(xi, *a + cfg.step * sign(gi)));
            still.push(i);
        }
        active = still;
    }
    adv
}
