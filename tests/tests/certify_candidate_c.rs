//! The certifier on the committed candidate-c model and real MNIST test images (the
//! embedded subset): its bounds contain what the f32 network does, and what it proves
//! or refutes is confirmed by inference.

use spartan_core::filter::pixel_to_unit;
use spartan_core::float::F32Model;
use spartan_train::certify::{real_ball, u8_ball, Certifier, CertifyConfig, Grid, Verdict};
use spartan_train::data::load_embedded;
use std::path::PathBuf;

fn model_bytes() -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/candidate-c.f32.spartan"),
    )
    .unwrap()
}

fn infer(model: &F32Model<'_>, x: &[f32]) -> (usize, Vec<f32>) {
    let mut arena = vec![0.0; model.arena_len()];
    let mut logits = vec![0.0; model.classes()];
    let c = model.infer(x, &mut arena, &mut logits).unwrap();
    (c, logits)
}

/// A deterministic stream of numbers in [0, 1).
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn perturb(s: &mut Stream, image: &[u8], eps: f32, grid: Grid) -> Vec<f32> {
    image
        .iter()
        .map(|&p| match grid {
            Grid::Real => {
                let (lo, hi) = real_ball(pixel_to_unit(p), eps);
                let v = f64::from(lo) + (f64::from(hi) - f64::from(lo)) * s.next();
                (v as f32).clamp(lo, hi)
            }
            Grid::U8 => {
                let (lo, hi) = u8_ball(p, eps);
                let q = lo as f64 + (f64::from(hi - lo) + 1.0) * s.next();
                pixel_to_unit((q as u8).min(hi))
            }
        })
        .collect()
}

#[test]
fn at_a_single_input_the_bounds_are_the_f32_margins() {
    let bytes = model_bytes();
    let cert = Certifier::new(F32Model::load(&bytes).unwrap()).unwrap();
    let test = load_embedded().unwrap().test;
    for i in 0..8 {
        let (image, label) = (test.image(i), test.labels[i]);
        let x: Vec<f32> = image.iter().map(|&p| pixel_to_unit(p)).collect();
        let (_, logits) = infer(cert.model(), &x);
        let bounds = cert.margin_bounds(image, label, 0.0, Grid::Real).unwrap();
        for (j, &b) in bounds.iter().enumerate() {
            if j == label as usize {
                continue;
            }
            let m = f64::from(logits[label as usize]) - f64::from(logits[j]);
            // Below the f32 margin by no more than the worst-case rounding bound
            // (about 1% of the margin on this network).
            assert!(
                b <= m && m - b < 0.02 * (1.0 + m.abs()),
                "image {i} class {j}: bound {b}, margin {m}"
            );
        }
    }
}

#[test]
fn random_perturbations_stay_inside_the_bounds() {
    let bytes = model_bytes();
    let cert = Certifier::new(F32Model::load(&bytes).unwrap()).unwrap();
    let test = load_embedded().unwrap().test;
    let mut s = Stream(0x5eed_0016);
    for (i, eps) in [(0usize, 0.03f32), (1, 0.1), (2, 0.3)] {
        let (image, label) = (test.image(i), test.labels[i]);
        for grid in [Grid::Real, Grid::U8] {
            let lin = cert.logit_bounds(image, eps, grid, true).unwrap();
            let margins = cert.margin_bounds(image, label, eps, grid).unwrap();
            for _ in 0..40 {
                let x = perturb(&mut s, image, eps, grid);
                let (_, logits) = infer(cert.model(), &x);
                for (j, &z) in logits.iter().enumerate() {
                    let z = f64::from(z);
                    assert!(
                        lin.lo[j] <= z && z <= lin.hi[j],
                        "image {i} ε {eps}: logit {j}"
                    );
                    let m = f64::from(logits[label as usize]) - z;
                    assert!(
                        j == label as usize || margins[j] <= m,
                        "image {i} ε {eps}: margin {j}"
                    );
                }
            }
        }
    }
}

#[test]
fn verdicts_on_real_images_hold_up() {
    let bytes = model_bytes();
    let cert = Certifier::new(F32Model::load(&bytes).unwrap()).unwrap();
    let test = load_embedded().unwrap().test;
    let mut s = Stream(0xc0de_0016);
    let mut proven = 0;
    for i in 0..24 {
        let (image, label) = (test.image(i), test.labels[i]);
        for grid in [Grid::Real, Grid::U8] {
            let eps = 0.02;
            let r = cert
                .certify(
                    image,
                    label,
                    eps,
                    &CertifyConfig {
                        grid,
                        budget: 8,
                        ..CertifyConfig::default()
                    },
                )
                .unwrap();
            match r.verdict {
                Verdict::Proven => {
                    proven += 1;
                    for _ in 0..20 {
                        let x = perturb(&mut s, image, eps, grid);
                        assert_eq!(infer(cert.model(), &x).0, label as usize, "image {i}");
                    }
                }
                Verdict::Counterexample => {
                    let cx = r.counterexample.unwrap();
                    assert_ne!(infer(cert.model(), &cx.input).0, label as usize);
                }
                Verdict::Unknown => {}
            }
        }
    }
    // At ε = 0.02 most of these pixels keep their code: most images are proven.
    assert!(proven >= 30, "{proven} of 48 proven");
}
