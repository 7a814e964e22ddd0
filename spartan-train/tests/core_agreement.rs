//! One source of truth: the trainer's forward pass equals `spartan-core`'s float
//! inference of the exported model file.

use spartan_core::float::F32Model;
use spartan_core::spec::NAMED_ARCHITECTURES;
use spartan_train::arch::{resolve, Overrides};
use spartan_train::data::load_embedded;
use spartan_train::nn::optim::AdamConfig;
use spartan_train::nn::Workspace;
use spartan_train::observe::Silent;
use spartan_train::train::{train, Start, TrainConfig};

/// Worst |Δlogit| over the first 1,000 test images, and how many images differ by more
/// than 1e-4.
fn compare(arch: &str) -> (f32, usize) {
    let mut splits = load_embedded().unwrap();
    // A short real training run so the weights are not just their initialisation.
    splits.train = splits.train.take(1_000);
    let config = TrainConfig {
        arch_name: arch.into(),
        spec: resolve(arch, Overrides::default(), 10).unwrap(),
        epochs: 1,
        batch: 64,
        adam: AdamConfig::default(),
        seed: 7,
        data: "embedded".into(),
        train_limit: None,
        init: Default::default(),
        anneal_epochs: 0,
        certify_eps: None,
        certify_warmup: 0,
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, net) = train(&config, &splits, dir.path(), Start::Fresh, &Silent).unwrap();
    let bytes = std::fs::read(dir.path().join("model.spartan")).unwrap();
    assert_eq!(bytes, net.to_model_bytes());
    let model = F32Model::load(&bytes).unwrap();
    let test = splits.test.take(1_000).to_input();
    let trainer_logits = net.forward(test.images(), &mut Workspace::new()).to_owned();
    let mut arena = vec![0.0; model.arena_len()];
    let mut out = vec![0.0; 10];
    let (mut worst, mut off) = (0.0f32, 0);
    for i in 0..test.len() {
        model.infer(test.image(i), &mut arena, &mut out).unwrap();
        let d = out
            .iter()
            .zip(trainer_logits.row(i))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        worst = worst.max(d);
        off += usize::from(d >= 1e-4);
    }
    (worst, off)
}

#[test]
fn trainer_forward_equals_core_float_inference() {
    for arch in NAMED_ARCHITECTURES {
        let (worst, off) = compare(arch);
        eprintln!("{arch}: max |Δlogit| = {worst:e}, images off by ≥ 1e-4: {off}");
        assert!(worst < 1e-4, "{arch}: max |Δlogit| {worst}, {off} images");
    }
}
