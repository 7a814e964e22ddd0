//! Soundness tests of the certifier on seeded tiny models: against brute force over
//! every reachable combination of codes, against random perturbations, and exactness
//! when no pixel can change code.

use super::domain::Domain;
use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spartan_core::activation::Activation;
use spartan_core::filter::{FilterKind, FilterSpec};
use spartan_core::format::{to_vec, DType, ModelBody, ModelKind, TensorRef};
use spartan_core::spec::{ArchSpec, ConvSpec, DenseSpec, LayerSpec, PoolSpec, Shape};

const BINARY: [Activation; 5] = [
    Activation::Hsat,
    Activation::Hsid,
    Activation::Hsnd { sigma: 1.0 },
    Activation::CosHsat,
    Activation::CosHsnd { sigma: 0.5 },
];

/// A random tiny network: `side`×`side` pixels, an optional filter, conv 2×2 (ReLU
/// or a binary activation), max-pool 2, dense 4 ReLU, dense 3.
fn tiny_spec(rng: &mut ChaCha8Rng, side: u16, filter: Option<FilterKind>) -> ArchSpec {
    let mut layers = heapless::Vec::new();
    if let Some(kind) = filter {
        let f = FilterSpec {
            kind,
            beta: rng.random_range(1..=3),
            activation: BINARY[rng.random_range(0..BINARY.len())],
            sf: 0.0,
        };
        layers.push(LayerSpec::Filter(f)).unwrap();
    }
    let conv_act = if rng.random_bool(0.25) {
        BINARY[rng.random_range(0..BINARY.len())]
    } else {
        Activation::Relu
    };
    for l in [
        LayerSpec::Conv(ConvSpec {
            filters: 3,
            kernel: 2,
            activation: conv_act,
        }),
        LayerSpec::MaxPool(PoolSpec { size: 2 }),
        LayerSpec::Dense(DenseSpec {
            units: 4,
            activation: Activation::Relu,
        }),
        LayerSpec::Dense(DenseSpec {
            units: 3,
            activation: Activation::Linear,
        }),
    ] {
        layers.push(l).unwrap();
    }
    ArchSpec {
        input: Shape::new(side, side, 1),
        layers,
    }
}

/// Random weights for `spec`: filter thresholds spread over the pixel range (cosine
/// filters over a few periods), other layers scaled by their fan-in.
fn model_bytes(spec: &ArchSpec, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let shapes = spec.shapes().expect("valid spec");
    let mut owned: Vec<(Vec<u32>, Vec<u8>)> = Vec::new();
    for (i, layer) in spec.layers.iter().enumerate() {
        let params = layer.params(shapes[i]);
        let fan_in = params
            .weight
            .map_or(1, |w| w.len() / w.dims().last().map_or(1, |&d| d as usize));
        for (k, shape) in [params.weight, params.bias].into_iter().enumerate() {
            let Some(shape) = shape else { continue };
            let values: Vec<f32> = (0..shape.len())
                .map(|_| match (layer, k) {
                    (LayerSpec::Filter(f), 0) if f.activation.is_cosine() => {
                        rng.random_range(1.0..6.0)
                    }
                    (LayerSpec::Filter(_), 0) => rng.random_range(0.5..2.0),
                    (LayerSpec::Filter(f), _) if f.activation.is_cosine() => {
                        rng.random_range(-3.0..3.0)
                    }
                    (LayerSpec::Filter(_), _) => rng.random_range(-1.5..0.0),
                    (_, 0) => rng.random_range(-1.0..1.0) * 2.0 / (fan_in as f32).sqrt(),
                    _ => rng.random_range(-0.3..0.3),
                })
                .collect();
            owned.push((
                shape.dims().to_vec(),
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
        }
    }
    let mut tensors = heapless::Vec::new();
    for (dims, bytes) in &owned {
        tensors
            .push(TensorRef::new(DType::F32, dims, bytes))
            .unwrap();
    }
    let body = ModelBody {
        spec: spec.clone(),
        tensors,
    };
    to_vec(ModelKind::F32, &body)
}

fn infer(model: &F32Model<'_>, x: &[f32]) -> (usize, Vec<f32>) {
    let mut arena = vec![0.0; model.arena_len()];
    let mut logits = vec![0.0; model.classes()];
    let c = model.infer(x, &mut arena, &mut logits).unwrap();
    (c, logits)
}

/// Whether `x'` is in the ball of `image` on `grid`, checked from the definitions.
fn in_ball(image: &[u8], eps: f32, grid: Grid, x: &[f32]) -> bool {
    image.iter().zip(x).all(|(&p, &v)| {
        let xv = pixel_to_unit(p);
        match grid {
            Grid::Real => {
                (0.0..=1.0).contains(&v) && (f64::from(v) - f64::from(xv)).abs() <= f64::from(eps)
            }
            Grid::U8 => {
                let q = (v * 255.0).round();
                (0.0..=255.0).contains(&q) && pixel_to_unit(q as u8) == v && (v - xv).abs() <= eps
            }
        }
    })
}

/// Every input of the domain's product, by a mixed-radix counter.
fn for_each_input(dom: &Domain, mut visit: impl FnMut(&[f32])) {
    let mut choice = vec![0usize; dom.groups.len()];
    let mut x = dom.pixels.clone();
    loop {
        for (g, &j) in dom.groups.iter().zip(&choice) {
            for (&e, &v) in g.elements.iter().zip(&g.options[j].pixels) {
                x[e] = v;
            }
        }
        visit(&x);
        let mut i = 0;
        loop {
            if i == choice.len() {
                return;
            }
            choice[i] += 1;
            if choice[i] < dom.groups[i].options.len() {
                break;
            }
            choice[i] = 0;
            i += 1;
        }
    }
}

fn combinations(dom: &Domain) -> f64 {
    dom.groups.iter().map(|g| g.options.len() as f64).product()
}

#[test]
fn no_certified_image_is_broken_by_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_c0de_0016);
    let (mut proven, mut refuted, mut checked, mut branched) = (0, 0, 0, 0);
    for trial in 0..240 {
        let filter = match trial % 3 {
            0 => Some(FilterKind::Conv),
            1 => Some(FilterKind::Offset),
            _ => None,
        };
        let spec = tiny_spec(&mut rng, 4, filter);
        let bytes = model_bytes(&spec, &mut rng);
        let cert = Certifier::new(F32Model::load(&bytes).unwrap()).unwrap();
        let image: Vec<u8> = (0..16).map(|_| rng.random()).collect();
        let x: Vec<f32> = image.iter().map(|&p| pixel_to_unit(p)).collect();
        let (clean, _) = infer(cert.model(), &x);
        // Mostly the clean prediction (a chance of proof), sometimes another class.
        let label = if rng.random_bool(0.8) {
            clean
        } else {
            rng.random_range(0..3)
        } as u8;
        let eps = [0.01f32, 0.03, 0.08, 0.15][rng.random_range(0..4)];
        for grid in [Grid::Real, Grid::U8] {
            let cluster = [1, 4, 16][(trial / 3) % 3];
            let dom = cert.domain(&image, eps, grid, 1).unwrap();
            // Brute force without a filter is over the corners of the box only: not
            // every input; the property test covers those models.
            if combinations(&dom) > 4096.0 || filter.is_none() {
                continue;
            }
            let cfg = CertifyConfig {
                grid,
                budget: 64,
                cluster,
            };
            let r = cert.certify(&image, label, eps, &cfg).unwrap();
            let mut broken = None;
            for_each_input(&dom, |xp| {
                if broken.is_none() && infer(cert.model(), xp).0 != label as usize {
                    broken = Some(xp.to_vec());
                }
            });
            checked += 1;
            match r.verdict {
                Verdict::Proven => {
                    proven += 1;
                    branched += usize::from(r.proven_by == Some(ProvenBy::Branching));
                    assert!(
                        broken.is_none(),
                        "trial {trial} {grid:?}: proven, but {broken:?} breaks it"
                    );
                }
                Verdict::Counterexample => {
                    refuted += 1;
                    let cx = r.counterexample.expect("a counterexample");
                    assert!(
                        in_ball(&image, eps, grid, &cx.input),
                        "trial {trial}: outside the ball"
                    );
                    let (c, logits) = infer(cert.model(), &cx.input);
                    assert_ne!(c, label as usize, "trial {trial}: not misclassified");
                    assert_eq!((c as u8, logits), (cx.predicted, cx.logits));
                }
                Verdict::Unknown => {}
            }
        }
    }
    // The test means something only if both outcomes occur often.
    eprintln!("{proven} proven ({branched} by branching), {refuted} refuted of {checked}");
    assert!(
        proven > checked / 5 && refuted > checked / 10 && branched > 5,
        "{proven} proven ({branched} by branching), {refuted} refuted of {checked}"
    );
}

#[test]
fn domains_hold_every_code_the_ball_reaches() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xd0_3a19);
    for trial in 0..60 {
        let kind = if trial % 2 == 0 {
            FilterKind::Conv
        } else {
            FilterKind::Offset
        };
        let spec = tiny_spec(&mut rng, 4, Some(kind));
        let bytes = model_bytes(&spec, &mut rng);
        let cert = Certifier::new(F32Model::load(&bytes).unwrap()).unwrap();
        let net::Front::Filter { units, .. } = &cert.net.front else {
            panic!("filtered")
        };
        let image: Vec<u8> = (0..16).map(|_| rng.random()).collect();
        let eps = rng.random_range(0.0..0.3f32);
        for grid in [Grid::Real, Grid::U8] {
            let dom = cert.domain(&image, eps, grid, 1).unwrap();
            for (e, &p) in image.iter().enumerate() {
                let x = pixel_to_unit(p);
                let options: Vec<u32> = match dom.groups.iter().find(|g| g.elements == [e]) {
                    Some(g) => g
                        .options
                        .iter()
                        .map(|o| spartan_core::codes::code_of(&units[e], o.pixels[0]))
                        .collect(),
                    None => vec![spartan_core::codes::code_of(&units[e], dom.pixels[e])],
                };
                // Every input of the ball shows one of the options.
                let reach: Vec<f32> = match grid {
                    Grid::U8 => (0..=255u8)
                        .map(pixel_to_unit)
                        .filter(|&v| (v - x).abs() <= eps)
                        .collect(),
                    Grid::Real => (0..=20_000)
                        .map(|k| {
                            (f64::from(x) - f64::from(eps)
                                + 2.0 * f64::from(eps) * f64::from(k) / 20_000.0)
                                as f32
                        })
                        .filter(|&v| {
                            (0.0..=1.0).contains(&v)
                                && (f64::from(v) - f64::from(x)).abs() <= f64::from(eps)
                        })
                        .collect(),
                };
                for v in reach {
                    let code = spartan_core::codes::code_of(&units[e], v);
                    assert!(
                        options.contains(&code),
                        "pixel {p} ε {eps} {grid:?}: {v} gives {code}, not in {options:?}"
                    );
                }
                // Every option's input is in the ball.
                if let Some(g) = dom.groups.iter().find(|g| g.elements == [e]) {
                    for o in &g.options {
                        let mut xp = dom.pixels.clone();
                        xp[e] = o.pixels[0];
                        assert!(in_ball(&image, eps, grid, &xp));
                    }
                }
            }
        }
    }
}

/// Random inputs of the ball: pixels anywhere in their interval, with a bias to the
/// ends (where the extremes of a piecewise-linear network tend to be).
fn random_input(rng: &mut ChaCha8Rng, image: &[u8], eps: f32, grid: Grid) -> Vec<f32> {
    image
        .iter()
        .map(|&p| match grid {
            Grid::Real => {
                let (lo, hi) = real_ball(pixel_to_unit(p), eps);
                match rng.random_range(0..4) {
                    0 => lo,
                    1 => hi,
                    _ => rng.random_range(lo..=hi),
                }
            }
            Grid::U8 => {
                let (lo, hi) = u8_ball(p, eps);
                pixel_to_unit(rng.random_range(lo..=hi))
            }
        })
        .collect()
}

#[test]
fn logits_and_margins_of_random_perturbations_stay_inside_the_bounds() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xb0_0d5);
    for trial in 0..90 {
        let filter = match trial % 3 {
            0 => Some(FilterKind::Conv),
            1 => Some(FilterKind::Offset),
            _ => None,
        };
        let side = if trial % 2 == 0 { 4 } else { 6 };
        let spec = tiny_spec(&mut rng, side, filter);
        let bytes = model_bytes(&spec, &mut rng);
        let cert = Certifier::new(F32Model::load(&bytes).unwrap()).unwrap();
        let n = usize::from(side * side);
        let image: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        let eps = rng.random_range(0.0..0.25f32);
        let label: u8 = rng.random_range(0..3);
        for grid in [Grid::Real, Grid::U8] {
            let ibp = cert.logit_bounds(&image, eps, grid, false).unwrap();
            let lin = cert.logit_bounds(&image, eps, grid, true).unwrap();
            let margins = cert.margin_bounds(&image, label, eps, grid).unwrap();
            for _ in 0..200 {
                let x = random_input(&mut rng, &image, eps, grid);
                let (_, logits) = infer(cert.model(), &x);
                for (j, &z) in logits.iter().enumerate() {
                    let z = f64::from(z);
                    for b in [&ibp, &lin] {
                        assert!(
                            b.lo[j] <= z && z <= b.hi[j],
                            "trial {trial}: logit {j} = {z} ∉ [{}, {}]",
                            b.lo[j],
                            b.hi[j]
                        );
                    }
                    let m = f64::from(logits[label as usize]) - z;
                    assert!(
                        j == label as usize || margins[j] <= m,
                        "trial {trial}: margin {j} = {m} < bound {}",
                        margins[j]
                    );
                }
            }
        }
    }
}

#[test]
fn with_no_pixel_near_a_threshold_the_certificate_is_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xe8_ac7);
    let (mut proven, mut refuted) = (0, 0);
    for trial in 0..120 {
        let kind = if trial % 2 == 0 {
            FilterKind::Conv
        } else {
            FilterKind::Offset
        };
        let spec = tiny_spec(&mut rng, 6, Some(kind));
        let bytes = model_bytes(&spec, &mut rng);
        let cert = Certifier::new(F32Model::load(&bytes).unwrap()).unwrap();
        let image: Vec<u8> = (0..36).map(|_| rng.random()).collect();
        // The largest ε (of a halving sequence) below every pixel's distance to a
        // code change.
        let Some(eps) = (0..40)
            .map(|k| 0.2f32 * 0.5f32.powi(k))
            .find(|&e| cert.uncertain_elements(&image, e, Grid::Real).unwrap() == 0)
        else {
            continue;
        };
        let label: u8 = rng.random_range(0..3);
        let x: Vec<f32> = image.iter().map(|&p| pixel_to_unit(p)).collect();
        let right = infer(cert.model(), &x).0 == label as usize;
        let r = cert
            .certify(&image, label, eps, &CertifyConfig::default())
            .unwrap();
        // The network sees one point: proven exactly when that point is right.
        if right {
            assert_eq!(r.verdict, Verdict::Proven, "trial {trial}");
            proven += 1;
        } else {
            assert_eq!(r.verdict, Verdict::Counterexample, "trial {trial}");
            refuted += 1;
        }
    }
    assert!(
        proven > 20 && refuted > 20,
        "{proven} proven, {refuted} refuted"
    );
}

#[test]
fn clusters_hold_every_combination_of_their_pixels() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xc1_05e);
    let mut merges = 0;
    for trial in 0..40 {
        let spec = tiny_spec(&mut rng, 6, Some(FilterKind::Conv));
        let bytes = model_bytes(&spec, &mut rng);
        let cert = Certifier::new(F32Model::load(&bytes).unwrap()).unwrap();
        let image: Vec<u8> = (0..36).map(|_| rng.random()).collect();
        let eps = rng.random_range(0.02..0.12f32);
        let single = cert.domain(&image, eps, Grid::U8, 1).unwrap();
        let cap = [2, 4, 16, 64][trial % 4];
        let merged = cert.domain(&image, eps, Grid::U8, cap).unwrap();
        assert_eq!(single.uncertain(), merged.uncertain());
        merges += single.groups.len() - merged.groups.len();
        assert_eq!(single.base, merged.base);
        // The same inputs, in the same number.
        assert_eq!(combinations(&single), combinations(&merged));
        if combinations(&single) > 4096.0 {
            continue;
        }
        let mut a = Vec::new();
        for_each_input(&single, |x| a.push(x.to_vec()));
        let mut b = Vec::new();
        for_each_input(&merged, |x| b.push(x.to_vec()));
        a.sort_by(|x, y| x.partial_cmp(y).unwrap());
        b.sort_by(|x, y| x.partial_cmp(y).unwrap());
        assert_eq!(a, b, "trial {trial}");
        for g in &merged.groups {
            assert!(g.options.len() <= cap.max(3) && g.options.len() >= 2);
        }
    }
    assert!(merges > 40, "{merges} merges");
}

#[test]
fn balls_follow_their_definitions() {
    for p in 0..=255u8 {
        for eps in [0.0f32, 0.01, 0.1, 0.2, 0.3, 1.0] {
            let x = pixel_to_unit(p);
            let (lo, hi) = real_ball(x, eps);
            assert!(lo <= x && x <= hi && lo >= 0.0 && hi <= 1.0);
            // Tight: the next floats out are outside (or outside [0, 1]).
            let outside = |v: f32| {
                !(0.0..=1.0).contains(&v) || (f64::from(v) - f64::from(x)).abs() > f64::from(eps)
            };
            assert!(!outside(lo) && !outside(hi));
            assert!(lo == 0.0 || outside(lo.next_down()));
            assert!(hi == 1.0 || outside(hi.next_up()));
            let (a, b) = u8_ball(p, eps);
            for q in 0..=255u8 {
                let inside = (pixel_to_unit(q) - x).abs() <= eps;
                assert_eq!(inside, (a..=b).contains(&q), "p {p} q {q} ε {eps}");
            }
        }
    }
    // 0.1 is 25.5 grey levels.
    assert_eq!(u8_ball(100, 0.1), (75, 125));
}

#[test]
fn bad_inputs_are_named() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let spec = tiny_spec(&mut rng, 4, Some(FilterKind::Conv));
    let bytes = model_bytes(&spec, &mut rng);
    let cert = Certifier::new(F32Model::load(&bytes).unwrap()).unwrap();
    let cfg = CertifyConfig::default();
    let e = cert.certify(&[0; 15], 0, 0.1, &cfg).unwrap_err();
    assert!(e.to_string().contains("15 pixels"), "{e}");
    let e = cert.certify(&[0; 16], 7, 0.1, &cfg).unwrap_err();
    assert!(e.to_string().contains("label 7"), "{e}");
    let e = cert.certify(&[0; 16], 0, 1.5, &cfg).unwrap_err();
    assert!(e.to_string().contains("1.5"), "{e}");
}
