//! How conv and dense weights start (biases start at 0; filters follow docs/maths.md).

use rand::{Rng, RngCore};
use spartan_core::activation::Activation;

/// How conv and dense weights start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// He-uniform, `U(±√(6/fan_in))`, for ReLU and linear layers (made for ReLU
    /// networks; on full MNIST the standard CNN ends higher than with Glorot), and
    /// Glorot for layers with a step activation: their synthetic gradients are only
    /// informative near the step (and `H(cos z)` is periodic), so wider
    /// pre-activations hurt (Candidate B ended 0.2 points lower with He there).
    He,
    /// Glorot-uniform, `U(±√(6/(fan_in+fan_out)))`: the Keras default the paper used.
    #[default]
    Glorot,
}

impl Init {
    /// `n` weights of a layer with activation `act`.
    pub fn sample(
        self,
        act: Activation,
        rng: &mut dyn RngCore,
        n: usize,
        (fan_in, fan_out): (usize, usize),
    ) -> Vec<f32> {
        let limit = match self {
            Init::He if !act.is_binary() => (6.0 / fan_in as f32).sqrt(),
            Init::He => (6.0 / (fan_in + fan_out) as f32).sqrt(),
            Init::Glorot => (6.0 / (fan_in + fan_out) as f32).sqrt(),
        };
        (0..n).map(|_| rng.random_range(-limit..limit)).collect()
    }
}
