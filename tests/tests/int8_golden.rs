//! The int8 path of `spartan-core`, run on the host on 1,000 MNIST test images, gives
//! exactly the logits recorded in `models/candidate-c.golden-logits.bin` — produced by
//! this same code when the model was committed, so any later change that alters integer
//! results is caught here (and on the device, whose self-test checks the same file).
//!
//! Regenerate (only when a change of integer results is intended):
//! `SPARTAN_BLESS=1 cargo test -p spartan-e2e --test int8_golden`.

use spartan_core::float::F32Model;
use spartan_core::int8::Int8Model;
use spartan_train::data::load_embedded;
use std::path::PathBuf;

const IMAGES: usize = 1000;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

#[test]
fn int8_logits_match_the_golden_file_and_agree_with_f32() {
    let int8_bytes = std::fs::read(models().join("candidate-c.int8.spartan")).unwrap();
    let f32_bytes = std::fs::read(models().join("candidate-c.f32.spartan")).unwrap();
    let int8 = Int8Model::load(&int8_bytes).unwrap();
    let f32m = F32Model::load(&f32_bytes).unwrap();
    let test = load_embedded().unwrap().test.take(IMAGES);

    let mut arena = vec![0u8; int8.arena_len()];
    let mut logits = vec![0i8; int8.classes()];
    let mut all_logits = Vec::with_capacity(IMAGES * 10);
    let mut int8_classes = Vec::new();
    for i in 0..IMAGES {
        int8_classes.push(int8.infer(test.image(i), &mut arena, &mut logits).unwrap());
        all_logits.extend(logits.iter().map(|&l| l as u8));
    }

    let golden_path = models().join("candidate-c.golden-logits.bin");
    if std::env::var_os("SPARTAN_BLESS").is_some() {
        std::fs::write(&golden_path, &all_logits).unwrap();
    }
    let golden = std::fs::read(&golden_path).expect("golden logits (SPARTAN_BLESS=1 to create)");
    assert_eq!(golden.len(), all_logits.len());
    if let Some(i) = golden.iter().zip(&all_logits).position(|(a, b)| a != b) {
        panic!(
            "int8 logits changed: image {}, class {}: golden {} now {} ({} of {} logits differ)",
            i / 10,
            i % 10,
            golden[i] as i8,
            all_logits[i] as i8,
            golden
                .iter()
                .zip(&all_logits)
                .filter(|(a, b)| a != b)
                .count(),
            golden.len()
        );
    }

    let mut scratch = vec![0.0; f32m.input_len()];
    let mut f_arena = vec![0.0; f32m.arena_len()];
    let mut f_logits = vec![0.0; 10];
    let mut agree = 0;
    let (mut f_ok, mut q_ok) = (0, 0);
    for (i, &q) in int8_classes.iter().enumerate() {
        let f = f32m
            .infer_u8(test.image(i), &mut scratch, &mut f_arena, &mut f_logits)
            .unwrap();
        agree += usize::from(f == q);
        f_ok += usize::from(f == test.labels[i] as usize);
        q_ok += usize::from(q == test.labels[i] as usize);
    }
    eprintln!("int8/f32 class agreement {agree}/{IMAGES}; accuracy f32 {f_ok}, int8 {q_ok}");
    assert!(agree * 100 >= 99 * IMAGES, "agreement {agree}/{IMAGES}");
}
