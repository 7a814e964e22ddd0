//! Attacks: closed forms on hand-built models, PGD/FGSM consistency, and the full
//! pipelines on a briefly trained network.

use ndarray::{Array4, ArrayView4};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spartan_core::activation::Activation;
use spartan_core::spec::{ArchSpec, DenseSpec, LayerSpec, Shape};
use spartan_train::arch::{resolve, Overrides};
use spartan_train::attack::blackbox::{
    black_box, class_probability_grads, lambda_sign, BlackBoxConfig,
};
use spartan_train::attack::gradient::{fgsm, Loss};
use spartan_train::attack::pgd::{pgd, PgdConfig, Schedule};
use spartan_train::attack::white_box::{
    white_box, Order, Plan, WarmStart, WhiteBoxAttack, WhiteBoxConfig,
};
use spartan_train::attack::Oracle;
use spartan_train::data::{load_embedded, Batch};
use spartan_train::nn::optim::AdamConfig;
use spartan_train::nn::{GradMode, Network, Workspace};
use spartan_train::observe::Silent;
use spartan_train::train::{train, Start, TrainConfig};

fn linear_model(w: &[f32], b: &[f32], inputs: u16, classes: u16) -> Network {
    let spec = ArchSpec {
        input: Shape::new(1, 1, inputs),
        layers: [LayerSpec::Dense(DenseSpec {
            units: classes,
            activation: Activation::Linear,
        })]
        .into_iter()
        .collect(),
    };
    let mut net = Network::init(&spec, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
    net.set_param_values(&[w.to_vec(), b.to_vec()]).unwrap();
    net
}

/// For a 2-class linear softmax model and label 0, ∂L/∂x_i = p₁·(W[i][1] − W[i][0]), so
/// FGSM moves pixel i by ε·sign(W[i][1] − W[i][0]) (p₁ > 0): a closed form.
#[test]
fn fgsm_on_a_linear_softmax_model_equals_the_closed_form() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let inputs = 50usize;
    let w: Vec<f32> = (0..inputs * 2)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let net = linear_model(&w, &[0.1, -0.2], inputs as u16, 2);
    let x: Vec<f32> = (0..2 * inputs)
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let xv = ArrayView4::from_shape((2, 1, 1, inputs), &x).unwrap();
    let mut ws = Workspace::new();
    for eps in [0.0f32, 0.05, 0.3, 1.0] {
        let adv = fgsm(&net, &mut ws, xv, &[0, 1], eps, GradMode::Surrogate);
        let adv = adv.as_slice().unwrap();
        for s in 0..2 {
            for i in 0..inputs {
                let d = w[i * 2 + 1] - w[i * 2];
                // Label 1 flips the sign: ∂L/∂x_i = p₀·(W[i][0] − W[i][1]).
                let dir = if s == 0 { d.signum() } else { -d.signum() };
                let want = (x[s * inputs + i] + eps * dir).clamp(0.0, 1.0);
                assert_eq!(adv[s * inputs + i], want, "eps {eps} sample {s} pixel {i}");
            }
        }
    }
}

fn trained_standard(limit: usize) -> (Network, Batch<f32>) {
    let mut splits = load_embedded().unwrap();
    splits.train = splits.train.take(limit);
    let config = TrainConfig {
        arch_name: "standard".into(),
        spec: resolve("standard", Overrides::default(), 10).unwrap(),
        epochs: 1,
        batch: 64,
        adam: AdamConfig::default(),
        seed: 2,
        data: "embedded".into(),
        train_limit: None,
        init: Default::default(),
        anneal_epochs: 0,
        certify_eps: None,
        certify_warmup: 0,
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, net) = train(&config, &splits, dir.path(), Start::Fresh, &Silent).unwrap();
    (net, splits.test.to_input())
}

#[test]
fn attacks_on_a_trained_network() {
    let (net, test) = trained_standard(4000);
    let n = 200;
    let data = test.take(n);
    let (x, y) = (data.images(), &data.labels[..]);
    let mut ws = Workspace::new();

    // PGD with one step of ε from the clean image is exactly FGSM.
    let one_step = PgdConfig {
        random_start: false,
        early_stop: false,
        ..PgdConfig::standard(0.1, 1)
    };
    let one_step = PgdConfig {
        schedule: Schedule::Constant { factor: 1.0 },
        ..one_step
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (a, queries) = pgd(&net, &mut ws, x, y, one_step, &mut rng);
    let b = fgsm(&net, &mut ws, x, y, 0.1, GradMode::Surrogate);
    assert_eq!(a, b);
    assert_eq!(
        queries,
        2 * n as u64,
        "one step and the check of its result"
    );

    // PGD (either schedule, either loss, with restarts) stays in the ε-ball and [0, 1].
    for cfg in [
        PgdConfig::standard(0.2, 5),
        PgdConfig::apgd(0.2, 10, 2, Loss::Margin),
    ] {
        let (adv, _) = pgd(&net, &mut ws, x, y, cfg, &mut ChaCha8Rng::seed_from_u64(1));
        for (&xa, &xc) in adv.iter().zip(x.iter()) {
            assert!((xa - xc).abs() <= 0.2 + 1e-6 && (0.0..=1.0).contains(&xa));
        }
    }

    // Sweeps: the attack works and accuracy does not rise with ε (an image broken at
    // one ε stays broken at larger ones).
    let eps = [0.0, 0.05, 0.1, 0.2, 0.3];
    let attacks = [
        WhiteBoxAttack::Fgsm {
            grad: GradMode::Surrogate,
        },
        WhiteBoxAttack::Pgd(PgdConfig::standard(0.0, 5)),
        WhiteBoxAttack::Pgd(PgdConfig::apgd(0.0, 10, 1, Loss::Margin)),
    ];
    let cfg = WhiteBoxConfig {
        attacks: attacks.to_vec(),
        plan: Plan::Each,
        use_labels: true,
        seed: 7,
        warm_start: Some(WarmStart::DEFAULT),
        order: Order::Ascending,
    };
    let r = white_box(&net, &data, &eps, &cfg, &Silent);
    assert_eq!(r.attacks.len(), 3, "{:?}", r.notes);
    for a in &r.attacks {
        let name = &a.attack;
        assert!(a.clean_accuracy > 0.8, "{name}: clean {}", a.clean_accuracy);
        assert_eq!(a.points[0].accuracy, a.clean_accuracy);
        for w in a.points.windows(2) {
            assert!(w[1].accuracy <= w[0].accuracy, "{name}: {:?}", a.points);
        }
        assert!(a.accuracy_at(0.3).unwrap() < 0.3, "{name}: {:?}", a.points);
    }
    // The worst case is at most every attack, at every ε, in real numbers and on the
    // u8 grid; and on the grid at least in real numbers.
    for (k, w) in r.worst_case.points.iter().enumerate() {
        for a in &r.attacks {
            let p = &a.points[k];
            assert!(w.accuracy <= p.accuracy, "{} at ε {}", a.attack, p.eps);
            assert!(w.accuracy_u8 <= p.accuracy_u8);
        }
        assert!(w.accuracy <= w.accuracy_u8.unwrap());
    }
    // The stronger APGD with margin loss beats 5-step PGD somewhere.
    let at = |i: usize, e: f32| r.attacks[i].accuracy_at(e).unwrap();
    assert!(eps.iter().any(|&e| at(2, e) < at(1, e)), "{:?}", r.attacks);
}

/// ∂p_y/∂x from the closed-form softmax Jacobian matches finite differences.
#[test]
fn substitute_jacobian_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let w: Vec<f32> = (0..6 * 3).map(|_| rng.random_range(-1.0..1.0)).collect();
    let net = linear_model(&w, &[0.0, 0.1, -0.1], 6, 3);
    let x: Vec<f32> = (0..6).map(|_| rng.random_range(0.0..1.0)).collect();
    let x = Array4::from_shape_vec((1, 1, 1, 6), x).unwrap();
    let mut ws = Workspace::new();
    let g = class_probability_grads(&net, &mut ws, x.view(), &[2]);
    let mut prob = |x: &Array4<f32>| {
        let logits = net.forward(x.view(), &mut ws);
        spartan_train::nn::loss::softmax(logits.row(0))[2]
    };
    for i in 0..6 {
        let mut p = x.clone();
        p[[0, 0, 0, i]] += 1e-3;
        let hi = prob(&p);
        p[[0, 0, 0, i]] -= 2e-3;
        let lo = prob(&p);
        assert!(
            (g[[0, 0, 0, i]] - (hi - lo) / 2e-3).abs() < 1e-3,
            "pixel {i}"
        );
    }
    assert_eq!(
        [0, 1, 2, 3, 4].map(lambda_sign),
        [-1.0, -1.0, -1.0, 1.0, 1.0]
    );
}

/// An oracle that counts its queries, to check the adversary only asks for labels of
/// its own synthetic points.
struct Counting<'a>(&'a mut Network, usize);

impl Oracle for Counting<'_> {
    fn classify(&mut self, x: ArrayView4<'_, f32>) -> Vec<u8> {
        self.1 += x.dim().0;
        self.0.classify(x)
    }
}

#[test]
fn black_box_pipeline_learns_a_substitute() {
    let (mut net, test) = trained_standard(4000);
    let holdout = test.slice(0..150);
    let eval = test.slice(150..test.len());
    let cfg = BlackBoxConfig {
        rounds: 4,
        epochs: 6,
        ..BlackBoxConfig::default()
    };
    let mut oracle = Counting(&mut net, 0);
    let r = black_box(&mut oracle, &holdout, &eval, 10, &[0.0, 0.3], &cfg, &Silent);
    // 150 · 2³ labels for the adversary; the rest are evaluation queries.
    assert_eq!(r.queries, 150 * 8);
    assert!(oracle.1 >= 1200 + 3 * eval.labels.len());
    assert!(r.substitute_agreement.unwrap() > 0.5, "{r:?}");
    assert_eq!(r.points[0].accuracy, r.clean_accuracy);
    assert!(r.points[1].accuracy < r.clean_accuracy, "{r:?}");
}
