//! The result record every attack writes: accuracy per ε.

use serde::{Deserialize, Serialize};

/// Images per attack batch.
pub const ATTACK_BATCH: usize = 250;

/// One ε of a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// Perturbation radius (ℓ∞).
    pub eps: f32,
    /// Accuracy on the adversarial images against the true labels.
    pub accuracy: f64,
    /// The same with adversarial images on the `u8` pixel grid (the device's threat
    /// model), for white-box attacks.
    #[serde(default)]
    pub accuracy_u8: Option<f64>,
    /// Images attacked.
    pub n: usize,
}

/// Everything an attack run reports (saved as `attack.json`, `attack.csv`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackReport {
    /// `fgsm`, `pgd`, `pgd-identity`, `filter-codes`, `worst-case` or `blackbox`.
    pub attack: String,
    /// Human description of the settings.
    pub settings: String,
    /// Accuracy of the attacked model on the clean evaluation images.
    pub clean_accuracy: f64,
    /// Evaluation images.
    pub n: usize,
    /// Queries made to the attacked model by the adversary (labels for black-box,
    /// gradients for white-box).
    pub queries: u64,
    /// Substitute accuracy on the evaluation images (black-box only).
    pub substitute_accuracy: Option<f64>,
    /// Agreement of substitute and oracle on the evaluation images (black-box only).
    pub substitute_agreement: Option<f64>,
    /// One point per ε.
    pub points: Vec<SweepPoint>,
    /// Wall time of the attack, seconds.
    #[serde(default)]
    pub seconds: f64,
}

impl AttackReport {
    /// `epsilon,accuracy,accuracy_u8,n` rows (`accuracy_u8` empty when not measured).
    pub fn csv(&self) -> String {
        let mut s = String::from("epsilon,accuracy,accuracy_u8,n\n");
        for p in &self.points {
            let u8 = p.accuracy_u8.map_or(String::new(), |a| format!("{a:.6}"));
            s += &format!("{},{:.6},{u8},{}\n", p.eps, p.accuracy, p.n);
        }
        s
    }

    /// The point at `eps`, if swept.
    pub fn point_at(&self, eps: f32) -> Option<&SweepPoint> {
        self.points.iter().find(|p| (p.eps - eps).abs() < 1e-6)
    }

    /// Accuracy at `eps`, if swept.
    pub fn accuracy_at(&self, eps: f32) -> Option<f64> {
        self.point_at(eps).map(|p| p.accuracy)
    }
}
