//! Applying a core [`Activation`] to a layer's pre-activations, forward and backward.
//!
//! The maths (forward value, synthetic gradient) is `spartan-core`'s; this module only
//! decides what must be kept for the backward pass and how a step is differentiated
//! (docs/maths.md: composite activations; docs/attacks.md: BPDA).

use super::kernels::{relu_in_place, relu_mask, step_in_place};
use super::trig::{cos_step_in_place, surrogate_backward};
use spartan_core::activation::Activation;

/// What the backward pass uses in place of a step's derivative. An argument of every
/// backward pass, never a setting of the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GradMode {
    /// The composite activation's synthetic gradient (training, default BPDA attack).
    #[default]
    Surrogate,
    /// BPDA with the step taken as the identity: `H(z)` → 1, `H(cos z)` → `-sin z`.
    Identity,
    /// The true derivative: zero through every step (almost everywhere). Gradient
    /// attacks get nothing through a step this way: the masking BPDA undoes.
    Exact,
}

/// True when backward needs the pre-activation `z` (steps); ReLU and linear layers
/// recover their derivative from the output alone.
pub fn keeps_preactivation(act: Activation) -> bool {
    act.is_binary()
}

/// Replaces pre-activations by activations in place, keeping `z` in `pre` if needed.
pub fn forward_in_place(act: Activation, values: &mut [f32], pre: Option<&mut [f32]>) {
    if act.is_cosine() {
        // The same 0/1, without a libm call per value, and `pre` kept in the same pass.
        return cos_step_in_place(act, values, pre);
    }
    if let Some(pre) = pre {
        pre.copy_from_slice(values);
    }
    match act {
        Activation::Linear => {}
        // Same expression as `Activation::forward`, vectorised.
        Activation::Relu => relu_in_place(values),
        // `H(z)`, vectorised (the cosine steps returned above).
        Activation::Hsid | Activation::Hsat | Activation::Hsnd { .. } => step_in_place(values),
        _ => values.iter_mut().for_each(|v| *v = act.forward(*v)),
    }
}

/// Multiplies an upstream gradient by the activation's (synthetic) derivative.
///
/// `pre` is the kept pre-activation (for steps), `out` the forward output.
pub fn backward_in_place(
    act: Activation,
    mode: GradMode,
    pre: &[f32],
    out: &[f32],
    grad: &mut [f32],
) {
    match act {
        Activation::Linear => {}
        Activation::Relu => relu_mask(grad, out),
        _ => match mode {
            // Within a few f32 ulps of the core's formula, vectorised.
            GradMode::Surrogate if surrogate_backward(act, pre, grad) => {}
            GradMode::Surrogate => {
                for (g, &z) in grad.iter_mut().zip(pre) {
                    *g *= act.surrogate_grad(z);
                }
            }
            GradMode::Identity if act.is_cosine() => {
                for (g, &z) in grad.iter_mut().zip(pre) {
                    *g *= -z.sin();
                }
            }
            GradMode::Identity => {}
            GradMode::Exact => grad.fill(0.0),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forward of every activation is the core's exactly, and so is the backward of
    /// those without a vectorised kernel (`trig` tests the others against the core).
    #[test]
    fn backward_is_upstream_times_core_surrogate_exactly() {
        let z: Vec<f32> = (0..200).map(|i| (i as f32 - 100.0) * 0.07).collect();
        let up: Vec<f32> = (0..200)
            .map(|i| ((i * 7919) % 13) as f32 * 0.1 - 0.6)
            .collect();
        for act in Activation::ALL {
            let mut y = z.clone();
            let mut pre = vec![0.0; z.len()];
            forward_in_place(
                act,
                &mut y,
                keeps_preactivation(act).then_some(pre.as_mut_slice()),
            );
            let mut g = up.clone();
            backward_in_place(act, GradMode::Surrogate, &pre, &y, &mut g);
            let vectorised = surrogate_backward(act, &pre, &mut up.clone());
            for i in 0..z.len() {
                assert_eq!(y[i], act.forward(z[i]), "{act} forward");
                if vectorised {
                    continue;
                }
                assert_eq!(
                    g[i],
                    up[i] * act.surrogate_grad(z[i]),
                    "{act} backward at {}",
                    z[i]
                );
            }
        }
    }

    /// The exact derivative is zero through every step, and leaves ReLU's alone.
    #[test]
    fn exact_mode_stops_gradients_at_steps_only() {
        let z = [-1.0f32, 0.5, 2.0];
        for act in [Activation::Hsat, Activation::CosHsnd { sigma: 1.0 }] {
            let mut g = [1.0f32; 3];
            backward_in_place(act, GradMode::Exact, &z, &[0.0, 1.0, 1.0], &mut g);
            assert_eq!(g, [0.0; 3], "{act}");
        }
        let (relu, mut g) = (Activation::Relu, [1.0f32; 3]);
        backward_in_place(relu, GradMode::Exact, &z, &z.map(|v| v.max(0.0)), &mut g);
        assert_eq!(g, [0.0, 1.0, 1.0]);
    }

    #[test]
    fn identity_bpda_passes_steps_through() {
        let z = [-1.0f32, 0.5, 2.0];
        let mut g = [1.0f32; 3];
        backward_in_place(
            Activation::Hsat,
            GradMode::Identity,
            &z,
            &[0.0, 1.0, 1.0],
            &mut g,
        );
        assert_eq!(g, [1.0; 3]);
        let mut g = [1.0f32; 3];
        backward_in_place(
            Activation::CosHsat,
            GradMode::Identity,
            &z,
            &[1.0; 3],
            &mut g,
        );
        assert_eq!(g, [1f32.sin(), -0.5f32.sin(), -2f32.sin()]);
    }
}
