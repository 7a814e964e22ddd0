//! The quantiser end to end, for every named architecture: a tiny network trained on a
//! slice of the embedded MNIST subset, quantised, then
//!
//! - the int8 file read back and written again by `spartan_core`'s record writer is
//!   the same file (the writer and the parser agree on every layer's record);
//! - the int8 model agrees with the f32 model it came from: classes, and logits within a
//!   bound of the f32 logits' spread.

use spartan_core::float::F32Model;
use spartan_core::int8::{Int8Model, Int8Writer};
use spartan_core::spec::NAMED_ARCHITECTURES;
use spartan_train::arch::{resolve, Overrides};
use spartan_train::data::load_embedded;
use spartan_train::nn::optim::AdamConfig;
use spartan_train::observe::Silent;
use spartan_train::quantize::quantize;
use spartan_train::train::{train, Start, TrainConfig};

/// Test images compared.
const IMAGES: usize = 500;

/// (int8/f32 class agreement, mean |Δlogit| / f32 logit spread, worst |Δlogit| / spread)
/// for a network of `arch` trained one epoch on 1,000 images.
fn round_trip(arch: &str) -> (f64, f64, f64) {
    let mut splits = load_embedded().unwrap();
    splits.train = splits.train.take(1_000);
    let config = TrainConfig {
        arch_name: arch.into(),
        spec: resolve(arch, Overrides::default(), 10).unwrap(),
        epochs: 1,
        batch: 64,
        adam: AdamConfig::default(),
        seed: 11,
        data: "embedded".into(),
        train_limit: None,
        init: Default::default(),
        anneal_epochs: 0,
        certify_eps: None,
        certify_warmup: 0,
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, net) = train(&config, &splits, dir.path(), Start::Fresh, &Silent).unwrap();
    let calib = splits.train.take(500).to_input();
    let int8_bytes = quantize(&net, calib.images()).unwrap();
    let f32_bytes = net.to_model_bytes();

    // The writer and the parser agree, byte for byte.
    let q = Int8Model::load(&int8_bytes).unwrap();
    let mut writer = Int8Writer::new(q.spec().clone()).unwrap();
    for record in q.records() {
        writer.record(&record).unwrap();
    }
    assert_eq!(
        writer.finish().unwrap(),
        int8_bytes,
        "{arch}: rewritten file differs"
    );

    let f = F32Model::load(&f32_bytes).unwrap();
    let test = splits.test.take(IMAGES);
    let (scale, zp) = q.logit_quantization();
    let mut arena = vec![0u8; q.arena_len()];
    let mut f_arena = vec![0.0; f.arena_len()];
    let mut scratch = vec![0.0; f.input_len()];
    let (mut logits, mut f_logits) = (vec![0i8; 10], vec![0.0f32; 10]);
    let (mut agree, mut err_sum, mut worst, mut spread_sum) = (0, 0.0f64, 0.0f64, 0.0f64);
    for i in 0..IMAGES {
        let image = test.image(i);
        let qc = q.infer(image, &mut arena, &mut logits).unwrap();
        let fc = f
            .infer_u8(image, &mut scratch, &mut f_arena, &mut f_logits)
            .unwrap();
        agree += usize::from(qc == fc);
        let (lo, hi) = f_logits
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let spread = f64::from(hi - lo).max(1e-6);
        spread_sum += spread;
        for (&l, &fl) in logits.iter().zip(&f_logits) {
            let real = f64::from(scale) * f64::from(i32::from(l) - zp);
            let d = (real - f64::from(fl)).abs();
            err_sum += d;
            worst = worst.max(d / spread);
        }
    }
    let n = IMAGES as f64;
    let mean_spread = spread_sum / n;
    (agree as f64 / n, err_sum / (10.0 * n) / mean_spread, worst)
}

#[test]
fn quantised_models_round_trip_and_agree_with_float() {
    for arch in NAMED_ARCHITECTURES {
        let (agreement, mean_err, worst_err) = round_trip(arch);
        eprintln!(
            "{arch}: int8/f32 class agreement {:.1} %, mean |Δlogit| {:.3} and worst {:.3} of the f32 logit spread",
            100.0 * agreement,
            mean_err,
            worst_err
        );
        assert!(agreement >= 0.95, "{arch}: agreement {agreement}");
        assert!(mean_err <= 0.02, "{arch}: mean logit error {mean_err}");
        assert!(worst_err <= 0.25, "{arch}: worst logit error {worst_err}");
    }
}
