//! The loss an attack climbs, its gradient, and FGSM (docs/attacks.md).
//!
//! Each call says how a Heaviside is differentiated ([`GradMode`]): its surrogate (the
//! adaptive attack, default), the identity, or its true (zero) derivative.

use super::threat::project;
use crate::nn::loss::cross_entropy_row;
use crate::nn::{GradMode, Network, Pass, Workspace};
use ndarray::{Array1, Array4, ArrayView1, ArrayView2, ArrayView4, ArrayViewMut1, Axis};
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

/// What an attack maximises for an image with target class `y`, given its logits `z`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Loss {
    /// Cross-entropy of the softmax against `y`.
    #[default]
    CrossEntropy,
    /// The margin of Carlini & Wagner, `max_{j≠y} z_j − z_y`: positive exactly when
    /// another class wins, and not saturated where the softmax is.
    Margin,
}

impl Loss {
    /// The loss of one row of logits against class `y`; writes `∂loss/∂logits` into `grad`.
    pub fn row(self, z: ArrayView1<'_, f32>, y: usize, mut grad: ArrayViewMut1<'_, f32>) -> f32 {
        match self {
            Loss::CrossEntropy => cross_entropy_row(z, y, 1.0, grad),
            Loss::Margin => {
                let (other, best) = runner_up(z, y);
                grad.fill(0.0);
                if let Some(j) = other {
                    grad[j] = 1.0;
                    grad[y] = -1.0;
                }
                best - z[y]
            }
        }
    }
}

/// An attacked image's loss and whether it is already misclassified.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// The attack's loss.
    pub loss: f32,
    /// The top class is not the target: the attack has won on this image.
    pub fooled: bool,
}

impl Loss {
    /// The score of each row of `logits` against its target class.
    pub fn scores(
        self,
        logits: ArrayView2<'_, f32>,
        targets: impl IntoIterator<Item = u8>,
    ) -> Vec<Score> {
        let mut grad = Array1::zeros(logits.ncols());
        logits
            .rows()
            .into_iter()
            .zip(targets)
            .map(|(z, y)| Score {
                loss: self.row(z, y as usize, grad.view_mut()),
                fooled: argmax(z.as_slice().unwrap_or(&[])) != y as usize,
            })
            .collect()
    }
}

/// Forward and backward of images `active` of `x` (through `pass`) against their
/// targets `targets[i]`: each one's score, and the gradient with respect to `x` (rows
/// in the order of `active`).
pub fn active_gradient<'w>(
    net: &Network,
    ws: &'w mut Workspace,
    x: ArrayView4<'_, f32>,
    active: &[usize],
    targets: &[u8],
    pass: &Pass,
    loss: Loss,
) -> (Vec<Score>, ArrayView4<'w, f32>) {
    let xa = x.select(Axis(0), active);
    let ta: Vec<u8> = active.iter().map(|&i| targets[i]).collect();
    let (logits, g) = loss_gradient(net, ws, xa.view(), &ta, pass, loss);
    (loss.scores(logits, ta), g)
}

/// The highest logit of a class other than `y`, and which class (`None` with one class).
fn runner_up(z: ArrayView1<'_, f32>, y: usize) -> (Option<usize>, f32) {
    z.iter().enumerate().filter(|&(j, _)| j != y).fold(
        (None, f32::NEG_INFINITY),
        |(bj, bv), (j, &v)| {
            if v > bv {
                (Some(j), v)
            } else {
                (bj, bv)
            }
        },
    )
}

/// Forward and backward of `loss` of each image against its target class through
/// `pass` (whose first layer's input `x` is): the logits, the gradient with respect to
/// `x`, and the total loss, in `ws`.
pub fn loss_gradient<'w>(
    net: &Network,
    ws: &'w mut Workspace,
    x: ArrayView4<'_, f32>,
    targets: &[u8],
    pass: &Pass,
    loss: Loss,
) -> (ArrayView2<'w, f32>, ArrayView4<'w, f32>) {
    let upstream = |i: usize, row: ArrayView1<'_, f32>, g: ArrayViewMut1<'_, f32>| {
        loss.row(row, targets[i] as usize, g)
    };
    net.backward(x, pass, upstream, ws, None).with_input_grads()
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
    let pass = Pass::input_gradient(net, grad);
    loss_gradient(net, ws, x, targets, &pass, Loss::CrossEntropy)
        .1
        .to_owned()
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
    let pass = Pass::input_gradient(net, grad);
    let (_, g) = loss_gradient(net, ws, x, targets, &pass, Loss::CrossEntropy);
    let mut adv = x.to_owned();
    adv.zip_mut_with(&g, |xi, &gi| *xi = project(*xi, eps, *xi + eps * sign(gi)));
    adv
}
