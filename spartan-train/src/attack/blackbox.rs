//! The surrogate black-box attack (Papernot et al. 2017) exactly as the paper ran it
//! with CleverHans 2.1.0 `mnist_blackbox`: the adversary holds the first 150 test
//! images, labels them with the oracle, and trains a substitute for 6 rounds of 10
//! epochs, doubling its data after every round but the last by Jacobian augmentation
//! (`x + λ_ρ·sign(∇x F_sub[y](x))`, λ = 0.1, the sign of λ_ρ flipped every 3 rounds)
//! labelled only by the oracle's argmax. FGSM on the substitute then transfers to the
//! oracle, whose accuracy is measured on the other images.

use super::gradient::{fgsm, sign};
use super::oracle::{accuracy, Oracle};
use super::sweep::{AttackReport, SweepPoint, ATTACK_BATCH};
use crate::data::Batch;
use crate::eval::classify;
use crate::nn::loss::softmax;
use crate::nn::optim::{AdamConfig, AdamState};
use crate::nn::{GradMode, Network, Pass, Workspace};
use crate::observe::Observer;
use crate::train::{epoch_order, Trainer};
use ndarray::{Array4, ArrayView1, ArrayView4, ArrayViewMut1, Axis};
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
pub fn class_probability_grads(
    sub: &Network,
    ws: &mut Workspace,
    x: ArrayView4<'_, f32>,
    labels: &[u8],
) -> Array4<f32> {
    let pass = Pass::input_gradient(sub, GradMode::Surrogate);
    let upstream = |i: usize, row: ArrayView1<'_, f32>, mut g: ArrayViewMut1<'_, f32>| {
        let p = softmax(row);
        let y = labels[i] as usize;
        for (k, gk) in g.iter_mut().enumerate() {
            *gk = p[y] * (if k == y { 1.0 } else { 0.0 } - p[k]);
        }
        0.0
    };
    let b = sub.backward(x, &pass, upstream, ws, None);
    b.with_input_grads().1.to_owned()
}

/// Jacobian augmentation: one new point per point of `data` (labelled by the oracle).
pub fn jacobian_augmentation(
    sub: &Network,
    ws: &mut Workspace,
    data: &Batch<f32>,
    lambda: f32,
) -> Array4<f32> {
    let mut out = data.images().to_owned();
    for (mut xb, yb) in out
        .axis_chunks_iter_mut(Axis(0), ATTACK_BATCH)
        .zip(data.labels.chunks(ATTACK_BATCH))
    {
        let g = class_probability_grads(sub, ws, xb.view(), yb);
        xb.zip_mut_with(&g, |xi, &gi| {
            *xi = (*xi + lambda * sign(gi)).clamp(0.0, 1.0)
        });
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

/// Trains the substitute from the `holdout` images (their oracle labels only: the
/// batch's own labels are never read).
pub fn train_substitute(
    oracle: &mut dyn Oracle,
    holdout: &Batch<f32>,
    classes: u16,
    cfg: &BlackBoxConfig,
    observer: &dyn Observer,
) -> Substitute {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let spec = cfg.substitute.spec(holdout.shape(), classes);
    let sub = Network::init(&spec, &mut rng).expect("substitute spec is valid");
    let mut trainer = Trainer::new(sub);
    let labels = oracle.classify(holdout.images());
    let mut queries = labels.len() as u64;
    let mut data = Batch::new(holdout.images().to_owned(), labels, "synthetic");
    let adam_cfg = AdamConfig {
        lr: cfg.lr,
        ..AdamConfig::default()
    };
    observer.begin("substitute", (cfg.rounds * cfg.epochs) as u64, 0);
    for rho in 0..cfg.rounds {
        // CleverHans builds a new Adam optimiser for every round.
        trainer.adam = AdamState::new(trainer.net.param_lens());
        let n = data.len();
        for epoch in 0..cfg.epochs {
            let order = epoch_order(cfg.seed.wrapping_add(1 + rho as u64), epoch, n);
            trainer.epoch(&adam_cfg, &data, &order, cfg.batch, |_| {});
            observer.advance(1);
        }
        observer.status(&format!(
            "round {} of {}: {} points",
            rho + 1,
            cfg.rounds,
            n
        ));
        if rho + 1 < cfg.rounds {
            let lambda = lambda_sign(rho) * cfg.lambda;
            let (net, ws) = trainer.parts();
            let new_x = jacobian_augmentation(net, ws, &data, lambda);
            let new_y = oracle.classify(new_x.view());
            queries += new_y.len() as u64;
            data.extend(new_x.view(), &new_y);
        }
    }
    observer.end();
    Substitute {
        net: trainer.into_network(),
        queries,
        train_size: data.len(),
    }
}

/// The whole black-box attack: substitute training on `holdout`, then an FGSM sweep on
/// the substitute (with its own predictions as targets), evaluated on the oracle.
pub fn black_box(
    oracle: &mut dyn Oracle,
    holdout: &Batch<f32>,
    eval: &Batch<f32>,
    classes: u16,
    eps: &[f32],
    cfg: &BlackBoxConfig,
    observer: &dyn Observer,
) -> AttackReport {
    let started = std::time::Instant::now();
    let s = train_substitute(oracle, holdout, classes, cfg, observer);
    let mut ws = Workspace::new();
    let sub_preds = classify(&s.net, eval.images(), &mut ws);
    let oracle_clean = oracle.classify(eval.images());
    observer.begin("transfer", eps.len() as u64, 0);
    let mut points = Vec::new();
    for &e in eps {
        let mut correct = 0usize;
        let images = eval.images();
        let batches = images
            .axis_chunks_iter(Axis(0), ATTACK_BATCH)
            .zip(sub_preds.chunks(ATTACK_BATCH))
            .zip(eval.labels.chunks(ATTACK_BATCH));
        for ((xb, tb), truth) in batches {
            let adv = fgsm(&s.net, &mut ws, xb, tb, e, GradMode::Surrogate);
            let preds = oracle.classify(adv.view());
            correct += preds.iter().zip(truth).filter(|(a, b)| a == b).count();
        }
        points.push(SweepPoint {
            eps: e,
            accuracy: correct as f64 / eval.len().max(1) as f64,
            accuracy_u8: None,
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
        seconds: started.elapsed().as_secs_f64(),
    }
}
