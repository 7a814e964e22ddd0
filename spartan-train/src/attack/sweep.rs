//! Accuracy-vs-ε sweeps and the result record every attack writes.

use super::gradient::{fgsm, pgd, PgdConfig};
use super::oracle::accuracy;
use crate::data::Batch;
use crate::eval::classify;
use crate::nn::{GradMode, Network, Workspace};
use crate::observe::Observer;
use ndarray::Axis;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
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
    /// Images attacked.
    pub n: usize,
}

/// Everything an attack run reports (saved as `attack.json`, `attack.csv`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackReport {
    /// `fgsm`, `pgd` or `blackbox`.
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
}

impl AttackReport {
    /// `epsilon,accuracy,n` rows.
    pub fn csv(&self) -> String {
        let mut s = String::from("epsilon,accuracy,n\n");
        for p in &self.points {
            s += &format!("{},{:.6},{}\n", p.eps, p.accuracy, p.n);
        }
        s
    }

    /// Accuracy at `eps` (nearest point), if swept.
    pub fn accuracy_at(&self, eps: f32) -> Option<f64> {
        self.points
            .iter()
            .find(|p| (p.eps - eps).abs() < 1e-6)
            .map(|p| p.accuracy)
    }
}

/// Which white-box attack.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WhiteBox {
    /// One signed-gradient step of size ε.
    Fgsm,
    /// `steps` projected steps of `step_factor · ε / steps`, random start if asked.
    Pgd {
        /// Iterations.
        steps: usize,
        /// Step size as a multiple of `ε / steps` (2.5 is the usual choice).
        step_factor: f32,
        /// Uniform random start in the ε-ball.
        random_start: bool,
    },
}

/// A white-box sweep's settings besides the ε values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WhiteBoxConfig {
    /// The attack.
    pub attack: WhiteBox,
    /// How steps are differentiated (BPDA).
    pub grad: GradMode,
    /// Attack the true labels; otherwise the model's own predictions (no label leaking).
    pub use_labels: bool,
    /// Seed of PGD's random starts.
    pub seed: u64,
}

/// Sweeps a white-box attack over `eps` on `data`.
pub fn white_box_sweep(
    net: &Network,
    data: &Batch<f32>,
    eps: &[f32],
    cfg: &WhiteBoxConfig,
    observer: &dyn Observer,
) -> AttackReport {
    let mut ws = Workspace::new();
    let clean = classify(net, data.images(), &mut ws);
    let clean_accuracy = accuracy(&clean, &data.labels);
    let targets = if cfg.use_labels {
        data.labels.clone()
    } else {
        clean
    };
    observer.begin(
        "attack",
        (eps.len() * data.len().div_ceil(ATTACK_BATCH)) as u64,
        0,
    );
    let mut queries = 0u64;
    let mut points = Vec::new();
    for (ei, &e) in eps.iter().enumerate() {
        let mut correct = 0usize;
        let images = data.images();
        let batches = images
            .axis_chunks_iter(Axis(0), ATTACK_BATCH)
            .zip(targets.chunks(ATTACK_BATCH))
            .zip(data.labels.chunks(ATTACK_BATCH));
        for (bi, ((xb, tb), truth)) in batches.enumerate() {
            let adv = match cfg.attack {
                WhiteBox::Fgsm => {
                    queries += tb.len() as u64;
                    fgsm(net, &mut ws, xb, tb, e, cfg.grad)
                }
                WhiteBox::Pgd {
                    steps,
                    step_factor,
                    random_start,
                } => {
                    queries += (tb.len() * steps) as u64;
                    let pgd_cfg = PgdConfig {
                        eps: e,
                        step: step_factor * e / steps.max(1) as f32,
                        steps,
                        random_start,
                        early_stop: true,
                        grad: cfg.grad,
                    };
                    let mut rng =
                        ChaCha8Rng::seed_from_u64(cfg.seed ^ ((ei as u64) << 32) ^ bi as u64);
                    pgd(net, &mut ws, xb, tb, pgd_cfg, &mut rng)
                }
            };
            let preds = classify(net, adv.view(), &mut ws);
            correct += preds.iter().zip(truth).filter(|(a, b)| a == b).count();
            observer.advance(1);
        }
        points.push(SweepPoint {
            eps: e,
            accuracy: correct as f64 / data.len().max(1) as f64,
            n: data.len(),
        });
        observer.status(&format!(
            "ε={e}: {:.1}%",
            points.last().map_or(0.0, |p| p.accuracy * 100.0)
        ));
    }
    observer.end();
    let (grad, targets) = (cfg.grad, targets_name(cfg.use_labels));
    let settings = match cfg.attack {
        WhiteBox::Fgsm => format!("FGSM (ℓ∞), BPDA {grad:?}, targets: {targets}"),
        WhiteBox::Pgd {
            steps,
            step_factor,
            random_start,
        } => format!(
            "PGD (ℓ∞), {steps} steps of {step_factor}·ε/{steps}, random start: {random_start}, stop on success, BPDA {grad:?}, targets: {targets}, seed {}",
            cfg.seed
        ),
    };
    AttackReport {
        attack: match cfg.attack {
            WhiteBox::Fgsm => "fgsm".into(),
            WhiteBox::Pgd { .. } => "pgd".into(),
        },
        settings,
        clean_accuracy,
        n: data.len(),
        queries,
        substitute_accuracy: None,
        substitute_agreement: None,
        points,
    }
}

fn targets_name(use_labels: bool) -> &'static str {
    if use_labels {
        "true labels"
    } else {
        "model predictions"
    }
}
