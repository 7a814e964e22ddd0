//! The surrogate black-box attack (Papernot et al. 2017) exactly as the paper ran it
//! with CleverHans 2.1.0 `mnist_blackbox`: the adversary holds the first 150 test
//! images, labels them with the oracle, and trains a substitute for 6 rounds of 10
//! epochs, doubling its data after every round but the last by Jacobian augmentation
//! (`x + λ_ρ·sign(∇x F_sub[y](x))`, λ = 0.1, the sign of λ_ρ flipped every 3 rounds)
//! labelled only by the oracle's argmax. FGSM on the substitute then transfers to the
//! oracle, whose accuracy is measured on the other images.

use super::gradient::{fgsm, sign};
use super::oracle::{accuracy, Oracle};
use super::sweep::{AttackReport, Batch, SweepPoint, ATTACK_BATCH};
use crate::nn::network::Want;
use crate::nn::optim::{AdamConfig, AdamState};
use crate::nn::Network;
use crate::observe::Observer;
use crate::train::{epoch_order, fit_epoch, ImageSource};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use spartan_core::activation::Activation;
use spartan_core::spec::{ArchSpec, ConvSpec, DenseSpec, LayerSpec, PoolSpec, Shape};

/// The substitute's architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubstituteKind {
    /// CleverHans's MLP: 784-200-200-10, ReLU (the paper's setting).
    Mlp,
    /// A small CNN: conv 32 3×3, pool 2, conv 64 3×3, pool 2, dense 200, dense 10.
    Cnn,
}

impl SubstituteKind {
    /// The substitute as a spec on `input` images with `classes` outputs.
    pub fn spec(self, input: Shape, classes: u16) -> ArchSpec {
        let relu = Activation::Relu;
        let dense = |units, activation| LayerSpec::Dense(DenseSpec { units, activation });
        let layers: Vec<LayerSpec> = match self {
            SubstituteKind::Mlp => vec![
                dense(200, relu),
                dense(200, relu),
                dense(classes, Activation::Linear),
            ],
            SubstituteKind::Cnn => {
                let conv = |filters| {
                    LayerSpec::Conv(ConvSpec {
                        filters,
                        kernel: 3,
                        activation: relu,
                    })
                };
                let pool = LayerSpec::MaxPool(PoolSpec { size: 2 });
                vec![
                    conv(32),
                    pool,
                    conv(64),
                    pool,
                    dense(200, relu),
                    dense(classes, Activation::Linear),
                ]
            }
        };
        ArchSpec {
            input,
            layers: layers.into_iter().collect(),
        }
    }
}

/// Settings of the black-box attack (defaults: CleverHans 2.1.0 `mnist_blackbox`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlackBoxConfig {
    /// Test images the adversary holds (the first ones).
    pub holdout: usize,
    /// Substitute training rounds ρ.
    pub rounds: usize,
    /// Epochs per round.
    pub epochs: usize,
    /// Jacobian augmentation step λ.
    pub lambda: f32,
    /// Substitute batch size.
    pub batch: usize,
    /// Substitute learning rate (Adam).
    pub lr: f32,
    /// Substitute architecture.
    pub substitute: SubstituteKind,
    /// Seed of the substitute's initialisation and shuffles.
    pub seed: u64,
}

impl Default for BlackBoxConfig {
    fn default() -> Self {
        BlackBoxConfig {
            holdout: 150,
            rounds: 6,
            epochs: 10,
            lambda: 0.1,
            batch: 128,
            lr: 1e-3,
            substitute: SubstituteKind::Mlp,
            seed: 1,
        }
    }
}

/// CleverHans's `lmbda_coef`: −1 for rounds 0–2, +1 from round 3 on.
pub fn lambda_sign(round: usize) -> f32 {
    if round / 3 == 0 {
        -1.0
    } else {
        1.0
    }
}

/// Gradient of the substitute's softmax output for class `labels[i]` with respect to
/// each image: `∂p_y/∂z_k = p_y(δ_yk − p_k)` back-propagated to the input.
pub fn class_probability_grads(sub: &mut Network, x: &[f32], labels: &[u8]) -> Vec<f32> {
    let want = Want {
        params: false,
        input: true,
        regularize: false,
    };
    sub.backprop(x, labels.len(), want, |i, row, g| {
        let p = crate::nn::loss::softmax(row);
        let y = labels[i] as usize;
        for (k, gk) in g.iter_mut().enumerate() {
            *gk = p[y] * (if k == y { 1.0 } else { 0.0 } - p[k]);
        }
        0.0
    });
    sub.input_grads().to_vec()
}

/// Jacobian augmentation: one new point per existing point.
pub fn jacobian_augmentation(sub: &mut Network, x: &[f32], labels: &[u8], lambda: f32) -> Vec<f32> {
    let len = sub.input_len();
    let mut out = Vec::with_capacity(x.len());
    for (xb, yb) in x
        .chunks(ATTACK_BATCH * len)
        .zip(labels.chunks(ATTACK_BATCH))
    {
        let g = class_probability_grads(sub, xb, yb);
        out.extend(
            xb.iter()
                .zip(&g)
                .map(|(&xi, &gi)| (xi + lambda * sign(gi)).clamp(0.0, 1.0)),
        );
    }
    out
}

/// A trained substitute and what its training cost.
pub struct Substitute {
    /// The substitute network.
    pub net: Network,
    /// Labels obtained from the oracle (its queries).
    pub queries: u64,
    /// Size of the final synthetic training set.
    pub train_size: usize,
}

/// Trains the substitute from the `holdout` images (their oracle labels only).
pub fn train_substitute(
    oracle: &mut dyn Oracle,
    holdout: &[f32],
    input: Shape,
    classes: u16,
    cfg: &BlackBoxConfig,
    observer: &dyn Observer,
) -> Substitute {
    let len = input.len();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut sub = Network::init(&cfg.substitute.spec(input, classes), &mut rng)
        .expect("substitute spec is valid");
    let mut x = holdout.to_vec();
    let mut y = oracle.classify(&x, x.len() / len);
    let mut queries = y.len() as u64;
    let adam_cfg = AdamConfig {
        lr: cfg.lr,
        ..AdamConfig::default()
    };
    observer.begin("substitute", (cfg.rounds * cfg.epochs) as u64, 0);
    for rho in 0..cfg.rounds {
        // CleverHans builds a new Adam optimiser for every round.
        let mut adam = AdamState::new(sub.param_lens());
        let n = y.len();
        for epoch in 0..cfg.epochs {
            let order = epoch_order(cfg.seed.wrapping_add(1 + rho as u64), epoch, n);
            let images = ImageSource::Values { x: &x, len };
            fit_epoch(
                &mut sub,
                &mut adam,
                &adam_cfg,
                &images,
                &y,
                &order,
                cfg.batch,
                |_| {},
            );
            observer.advance(1);
        }
        observer.status(&format!(
            "round {} of {}: {} points",
            rho + 1,
            cfg.rounds,
            n
        ));
        if rho + 1 < cfg.rounds {
            let new_x = jacobian_augmentation(&mut sub, &x, &y, lambda_sign(rho) * cfg.lambda);
            let new_y = oracle.classify(&new_x, n);
            queries += new_y.len() as u64;
            x.extend_from_slice(&new_x);
            y.extend_from_slice(&new_y);
        }
    }
    observer.end();
    Substitute {
        net: sub,
        queries,
        train_size: y.len(),
    }
}

/// The whole black-box attack: substitute training on `holdout`, then an FGSM sweep on
/// the substitute (with its own predictions as targets), evaluated on the oracle.
pub fn black_box(
    oracle: &mut dyn Oracle,
    holdout: &Batch,
    eval: &Batch,
    (input, classes): (Shape, u16),
    eps: &[f32],
    cfg: &BlackBoxConfig,
    observer: &dyn Observer,
) -> AttackReport {
    let mut s = train_substitute(oracle, &holdout.x, input, classes, cfg, observer);
    let sub_preds = s.net.classify(&eval.x, eval.len());
    let oracle_clean = oracle.classify(&eval.x, eval.len());
    let len = input.len();
    observer.begin("transfer", eps.len() as u64, 0);
    let mut points = Vec::new();
    for &e in eps {
        let mut correct = 0usize;
        for (bi, (xb, tb)) in eval
            .x
            .chunks(ATTACK_BATCH * len)
            .zip(sub_preds.chunks(ATTACK_BATCH))
            .enumerate()
        {
            let adv = fgsm(&mut s.net, xb, tb, e);
            let preds = oracle.classify(&adv, tb.len());
            let truth = &eval.labels[bi * ATTACK_BATCH..bi * ATTACK_BATCH + tb.len()];
            correct += preds.iter().zip(truth).filter(|(a, b)| a == b).count();
        }
        points.push(SweepPoint {
            eps: e,
            accuracy: correct as f64 / eval.len().max(1) as f64,
            n: eval.len(),
        });
        observer.advance(1);
    }
    observer.end();
    AttackReport {
        attack: "blackbox".into(),
        settings: format!(
            "surrogate black-box (CleverHans 2.1.0 mnist_blackbox): {:?} substitute, holdout {}, {} rounds × {} epochs, λ = {}, batch {}, lr {}, seed {}; {} synthetic points; FGSM on the substitute (its own predictions as targets)",
            cfg.substitute, cfg.holdout, cfg.rounds, cfg.epochs, cfg.lambda, cfg.batch, cfg.lr, cfg.seed, s.train_size
        ),
        clean_accuracy: accuracy(&oracle_clean, &eval.labels),
        n: eval.len(),
        queries: s.queries,
        substitute_accuracy: Some(accuracy(&sub_preds, &eval.labels)),
        substitute_agreement: Some(accuracy(&sub_preds, &oracle_clean)),
        points,
    }
}
