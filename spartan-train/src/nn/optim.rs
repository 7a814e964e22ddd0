//! Adam (Kingma & Ba), the optimiser of the paper's Keras implementation.

use ndarray::{ArrayViewD, ArrayViewMutD};
use serde::{Deserialize, Serialize};

/// Adam hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator guard.
    pub eps: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
        }
    }
}

/// Moment estimates for every parameter tensor, in network order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AdamState {
    /// Steps taken.
    pub t: u64,
    /// First moments.
    pub m: Vec<Vec<f32>>,
    /// Second moments.
    pub v: Vec<Vec<f32>>,
}

impl AdamState {
    /// Zero moments for tensors of the given lengths.
    pub fn new(lens: impl IntoIterator<Item = usize>) -> Self {
        let lens: Vec<usize> = lens.into_iter().collect();
        AdamState {
            t: 0,
            m: lens.iter().map(|&n| vec![0.0; n]).collect(),
            v: lens.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// Applies one update to `params` (paired with their gradients, e.g.
    /// `net.params_mut()` with `grads.tensors()`), in the same order as the lengths
    /// given to [`new`](Self::new).
    pub fn step<'a>(
        &mut self,
        cfg: &AdamConfig,
        params: impl IntoIterator<Item = (ArrayViewMutD<'a, f32>, ArrayViewD<'a, f32>)>,
    ) {
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - cfg.beta1.powi(t);
        let bc2 = 1.0 - cfg.beta2.powi(t);
        // Keras/TF form: lr_t = lr·√(1-β2ᵗ)/(1-β1ᵗ), θ -= lr_t·m/(√v + ε).
        let lr_t = cfg.lr * bc2.sqrt() / bc1;
        for ((mut p, g), (m, v)) in params
            .into_iter()
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
        {
            for (((p, &g), m), v) in p.iter_mut().zip(&g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = cfg.beta1 * *m + (1.0 - cfg.beta1) * g;
                *v = cfg.beta2 * *v + (1.0 - cfg.beta2) * g * g;
                *p -= lr_t * *m / (v.sqrt() + cfg.eps);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_each_parameter_by_lr_against_its_gradient_sign() {
        let cfg = AdamConfig::default();
        let mut st = AdamState::new([3]);
        let mut p = ndarray::arr1(&[1.0f32, 1.0, 1.0]).into_dyn();
        let g = ndarray::arr1(&[0.5f32, -2.0, 0.0]).into_dyn();
        st.step(&cfg, [(p.view_mut(), g.view())]);
        // m̂ = g, v̂ = g², so the step is lr·g/|g| (ε aside).
        assert!((p[0] - (1.0 - 1e-3)).abs() < 1e-6);
        assert!((p[1] - (1.0 + 1e-3)).abs() < 1e-6);
        assert_eq!(p[2], 1.0);
    }

    #[test]
    fn minimises_a_quadratic() {
        let cfg = AdamConfig {
            lr: 0.05,
            ..Default::default()
        };
        let mut st = AdamState::new([2]);
        let mut p = ndarray::arr1(&[3.0f32, -2.0]).into_dyn();
        for _ in 0..2000 {
            let g = p.mapv(|x| 2.0 * (x - 1.0));
            st.step(&cfg, [(p.view_mut(), g.view())]);
        }
        assert!(p.iter().all(|x| (x - 1.0).abs() < 1e-2), "{p:?}");
    }
}
