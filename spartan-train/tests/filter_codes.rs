//! The filter-code attack against brute force on tiny models, and its threat model
//! (never outside the ε-ball, `[0, 1]`, or, when asked, the `u8` grid); the same for
//! sweeps that start each ε from the points found at the ε before.

use ndarray::{Array4, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spartan_core::activation::Activation;
use spartan_core::filter::{pixel_to_unit, FilterKind, FilterSpec};
use spartan_core::spec::{ArchSpec, DenseSpec, LayerSpec, Shape};
use spartan_train::attack::filter_codes::{
    filter_codes, filter_codes_from, movable, ElementFilter, FilterCodesConfig, Images,
};
use spartan_train::attack::gradient::Loss;
use spartan_train::attack::pgd::{pgd_from, PgdConfig};
use spartan_train::attack::sweep::AttackReport;
use spartan_train::attack::threat::{ball, Grid};
use spartan_train::attack::white_box::{
    all_attacks, white_box, Order, Plan, WarmStart, WhiteBoxConfig, WhiteBoxResult,
};
use spartan_train::data::Batch;
use spartan_train::eval::classify;
use spartan_train::nn::{Network, Workspace};
use spartan_train::observe::Silent;

const ACTIVATIONS: [Activation; 4] = [
    Activation::Hsat,
    Activation::Hsnd { sigma: 1.0 },
    Activation::CosHsat,
    Activation::CosHsnd { sigma: 0.5 },
];

/// A random network on `pixels` inputs: a filtering layer (Conv or Offset, β 1–4, any
/// binary activation, thresholds inside `[0, 1]`), then dense 8 ReLU and dense 3.
fn tiny_model(rng: &mut ChaCha8Rng, pixels: u16) -> Network {
    let kind = if rng.random_bool(0.5) {
        FilterKind::Conv
    } else {
        FilterKind::Offset
    };
    let spec = FilterSpec {
        kind,
        beta: rng.random_range(1..=4),
        activation: ACTIVATIONS[rng.random_range(0..ACTIVATIONS.len())],
        sf: 0.0,
    };
    let dense = |units, activation| LayerSpec::Dense(DenseSpec { units, activation });
    let arch = ArchSpec {
        input: Shape::new(1, pixels, 1),
        layers: [
            LayerSpec::Filter(spec),
            dense(8, Activation::Relu),
            dense(3, Activation::Linear),
        ]
        .into_iter()
        .collect(),
    };
    let mut net = Network::init(&arch, rng).unwrap();
    let mut values = net.param_values();
    // A step unit `H(w·x + b)` switches at `x = τ = −b/w`: put τ inside [0, 1]. A
    // cosine unit switches every π/w: a weight up to 12 gives up to 4 switches.
    let unit = |rng: &mut ChaCha8Rng| -> (f32, f32) {
        if spec.activation.is_cosine() {
            (rng.random_range(1.0..12.0), rng.random_range(-3.0..3.0))
        } else {
            let w = rng.random_range(0.5..3.0) * if rng.random_bool(0.8) { 1.0 } else { -1.0 };
            (w, -w * rng.random_range(0.05..0.95))
        }
    };
    match kind {
        FilterKind::Conv => {
            let (weights, rest) = values.split_at_mut(1);
            let units = weights[0].iter_mut().zip(rest[0].iter_mut());
            for (w, b) in units.take(spec.beta as usize) {
                (*w, *b) = unit(rng);
            }
        }
        // Weight 1: the threshold is the bias (`cos` switches at x + b = π/2).
        FilterKind::Offset => {
            let shift = if spec.activation.is_cosine() {
                std::f32::consts::FRAC_PI_2
            } else {
                0.0
            };
            for b in values[0].iter_mut() {
                *b = shift - rng.random_range(0.05..0.95);
            }
        }
    }
    // Dense weights of either sign, larger than Glorot's, so classes really compete.
    let first_dense = values.len() - 4;
    for v in &mut values[first_dense..] {
        for p in v.iter_mut() {
            *p = rng.random_range(-1.5..1.5);
        }
    }
    net.set_param_values(&values).unwrap();
    net
}

/// Whether some combination of reachable codes (one value per element, each the
/// nearest of its code's segment) is misclassified: every combination is tried.
fn brute_force(net: &Network, filter: &ElementFilter, x: &Array4<f32>, y: u8, eps: f32) -> bool {
    brute_force_on(net, filter, x, y, eps, Grid::Real)
}

/// [`brute_force`] over the codes reachable on `grid`.
fn brute_force_on(
    net: &Network,
    filter: &ElementFilter,
    x: &Array4<f32>,
    y: u8,
    eps: f32,
    grid: Grid,
) -> bool {
    let xs = x.index_axis(Axis(0), 0);
    let values = xs.as_slice().unwrap();
    let choices: Vec<Vec<f32>> = values
        .iter()
        .enumerate()
        .map(|(e, &v)| {
            filter
                .choices(e, v, eps, grid)
                .iter()
                .map(|c| c.value)
                .collect()
        })
        .collect();
    let total: usize = choices.iter().map(Vec::len).product();
    let mut batch = Array4::zeros((total, 1, values.len(), 1));
    for (n, mut img) in batch.outer_iter_mut().enumerate() {
        let mut rest = n;
        for (e, c) in choices.iter().enumerate() {
            img[[0, e, 0]] = c[rest % c.len()];
            rest /= c.len();
        }
    }
    classify(net, batch.view(), &mut Workspace::new())
        .iter()
        .any(|&p| p != y)
}

/// On 400 seeded tiny models (3–5 pixels, so every combination of reachable codes can
/// be tried), the search finds an adversarial example in at least 95 % of the cases
/// where brute force shows one exists.
#[test]
fn finds_what_brute_force_finds() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_c0de);
    // The attack's own generator: the cases do not depend on what the attack draws.
    let mut attack_rng = ChaCha8Rng::seed_from_u64(1);
    let mut ws = Workspace::new();
    let (mut exists, mut found) = (0, 0);
    for _ in 0..400 {
        let pixels = rng.random_range(3..=5u16);
        let net = tiny_model(&mut rng, pixels);
        let filter = ElementFilter::of(&net).unwrap();
        let x = Array4::from_shape_fn((1, 1, pixels as usize, 1), |_| {
            pixel_to_unit(rng.random_range(0..=255u8))
        });
        let y = classify(&net, x.view(), &mut ws)[0];
        let eps = rng.random_range(0.05..0.4);
        if !brute_force(&net, &filter, &x, y, eps) {
            continue;
        }
        exists += 1;
        let cfg = FilterCodesConfig::new(eps, Grid::Real);
        let (adv, _) = filter_codes(&net, &filter, &mut ws, x.view(), &[y], cfg, &mut attack_rng);
        if classify(&net, adv.view(), &mut ws)[0] != y {
            found += 1;
        }
    }
    assert!(
        exists >= 100,
        "only {exists} cases with an adversarial example"
    );
    let rate = found as f64 / exists as f64;
    eprintln!("found {found} of {exists} ({:.1}%)", rate * 100.0);
    assert!(rate >= 0.95, "found {found} of {exists}");
}

/// Whatever the model, image, ε and grid, every value the attack returns lies in the
/// ball (as `threat::ball` defines it, in `f32`), hence in [0, 1]; on the `u8` grid
/// every value is a raw pixel `p / 255`.
#[test]
fn never_leaves_the_ball() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xba11);
    let mut ws = Workspace::new();
    for case in 0..150 {
        let pixels = rng.random_range(3..=12u16);
        let net = tiny_model(&mut rng, pixels);
        let filter = ElementFilter::of(&net).unwrap();
        let n = 4;
        let on_grid = case % 2 == 0;
        let x = Array4::from_shape_fn((n, 1, pixels as usize, 1), |_| {
            if on_grid {
                pixel_to_unit(rng.random_range(0..=255u8))
            } else {
                rng.random_range(0.0..=1.0f32)
            }
        });
        let targets: Vec<u8> = (0..n).map(|_| rng.random_range(0..3)).collect();
        let eps = [0.0, 0.01, 0.1, 0.3, 0.6, 1.0][case % 6];
        for grid in [Grid::Real, Grid::U8] {
            let cfg = FilterCodesConfig {
                steps: 10,
                ..FilterCodesConfig::new(eps, grid)
            };
            let (adv, _) = filter_codes(&net, &filter, &mut ws, x.view(), &targets, cfg, &mut rng);
            for (&a, &c) in adv.iter().zip(x.iter()) {
                let (lo, hi) = ball(c, eps);
                assert!(
                    (lo..=hi).contains(&a) && (0.0..=1.0).contains(&a),
                    "case {case} {grid:?}: {a} from {c} at ε {eps}"
                );
                if grid == Grid::U8 && on_grid {
                    assert_eq!(pixel_to_unit((a * 255.0).round() as u8), a, "off the grid");
                }
            }
        }
    }
}

/// The worst-case cascade on tiny filtered models: each attack can only lower the
/// count of robust images, the worst case is what is left after the last one, it is no
/// higher than FGSM alone (which runs first, on the same images, with the same seed),
/// and an image broken on the `u8` grid is broken in real numbers.
#[test]
fn the_cascade_only_ever_lowers_robust_accuracy() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xca5c);
    let eps = [0.0, 0.05, 0.1, 0.2, 0.3];
    for _ in 0..6 {
        let pixels = rng.random_range(6..=12u16);
        let net = tiny_model(&mut rng, pixels);
        let n = 40;
        let images = Array4::from_shape_fn((n, 1, pixels as usize, 1), |_| {
            pixel_to_unit(rng.random_range(0..=255u8))
        });
        let mut ws = Workspace::new();
        let labels = classify(&net, images.view(), &mut ws);
        let data = Batch::new(images, labels, "tiny");
        let pgd = PgdConfig::apgd(0.0, 10, 1, Loss::CrossEntropy);
        let codes = FilterCodesConfig {
            steps: 20,
            restarts: 2,
            ..FilterCodesConfig::new(0.0, Grid::Real)
        };
        let attacks = all_attacks(pgd, codes);
        let run = |plan| {
            let cfg = WhiteBoxConfig {
                attacks: attacks.clone(),
                plan,
                use_labels: true,
                seed: 3,
                warm_start: Some(WarmStart::DEFAULT),
                order: Order::Ascending,
            };
            white_box(&net, &data, &eps, &cfg, &Silent)
        };
        let cascade = run(Plan::Cascade);
        let alone = run(Plan::Each);
        assert_eq!(cascade.attacks.len(), 4, "{:?}", cascade.notes);
        for k in 0..eps.len() {
            let at = |r: &AttackReport| r.points[k];
            for w in cascade.attacks.windows(2) {
                assert!(at(&w[1]).accuracy <= at(&w[0]).accuracy);
                assert!(at(&w[1]).accuracy_u8 <= at(&w[0]).accuracy_u8);
            }
            let worst = at(&cascade.worst_case);
            assert_eq!(worst, at(cascade.attacks.last().unwrap()));
            assert!(worst.accuracy <= at(&alone.attacks[0]).accuracy);
            assert!(worst.accuracy <= worst.accuracy_u8.unwrap());
        }
        assert_eq!(
            cascade.worst_case.points[0].accuracy, 1.0,
            "clean, own labels"
        );
    }
}

/// An image the sweep does not attack (no element can change its code in the ball)
/// really has one answer everywhere in its ball: random points of the ball and its
/// corners all get the clean class.
#[test]
fn images_without_a_free_element_cannot_be_moved() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xf1ed);
    let mut ws = Workspace::new();
    let mut fixed = 0;
    for _ in 0..200 {
        let pixels = rng.random_range(3..=8u16);
        let net = tiny_model(&mut rng, pixels);
        let filter = ElementFilter::of(&net).unwrap();
        let eps = rng.random_range(0.005..0.08);
        let x = Array4::from_shape_fn((1, 1, pixels as usize, 1), |_| {
            pixel_to_unit(rng.random_range(0..=255u8))
        });
        if movable(&filter, x.view(), eps, Grid::Real)[0] {
            continue;
        }
        fixed += 1;
        let y = classify(&net, x.view(), &mut ws)[0];
        let points = Array4::from_shape_fn((64, 1, pixels as usize, 1), |(k, _, e, _)| {
            let (lo, hi) = ball(x[[0, 0, e, 0]], eps);
            match k {
                0 => lo,
                1 => hi,
                _ => rng.random_range(lo..=hi),
            }
        });
        let preds = classify(&net, points.view(), &mut ws);
        assert!(preds.iter().all(|&p| p == y), "{preds:?} vs {y}");
    }
    assert!(fixed >= 20, "only {fixed} images without a free element");
}

/// A warm start cannot take an attack out of its ball: started from points anywhere
/// (outside the ball, outside [0, 1]), the filter-code search and PGD still return
/// only points of the ball (and, for the search on the `u8` grid, raw pixels).
#[test]
fn warm_starts_stay_in_the_ball() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x3a53);
    let mut ws = Workspace::new();
    for case in 0..60 {
        let pixels = rng.random_range(3..=12u16);
        let net = tiny_model(&mut rng, pixels);
        let filter = ElementFilter::of(&net).unwrap();
        let n = 4;
        let shape = (n, 1, pixels as usize, 1);
        let x = Array4::from_shape_fn(shape, |_| pixel_to_unit(rng.random_range(0..=255u8)));
        let targets: Vec<u8> = (0..n).map(|_| rng.random_range(0..3)).collect();
        let eps = [0.01, 0.1, 0.3][case % 3];
        let far = Array4::from_shape_fn(shape, |_| rng.random_range(-0.5..1.5f32));
        let larger = Array4::from_shape_fn(shape, |(i, _, e, _)| {
            let (lo, hi) = ball(x[[i, 0, e, 0]], 2.0 * eps);
            rng.random_range(lo..=hi)
        });
        let inside = |adv: &Array4<f32>, grid: Grid, what: &str| {
            for (&a, &c) in adv.iter().zip(x.iter()) {
                let (lo, hi) = ball(c, eps);
                assert!(
                    (lo..=hi).contains(&a),
                    "case {case} {what} {grid:?}: {a} from {c} at ε {eps}"
                );
                if grid == Grid::U8 {
                    assert_eq!(pixel_to_unit((a * 255.0).round() as u8), a, "off the grid");
                }
            }
        };
        let warm = [far.view(), larger.view()];
        for grid in [Grid::Real, Grid::U8] {
            let cfg = FilterCodesConfig {
                steps: 10,
                restarts: 1,
                ..FilterCodesConfig::new(eps, grid)
            };
            let images = Images {
                x: x.view(),
                targets: &targets,
                warm: &warm,
            };
            let (adv, _) = filter_codes_from(&net, &filter, &mut ws, images, cfg, &mut rng);
            inside(&adv, grid, "filter codes");
        }
        let cfg = PgdConfig::apgd(eps, 5, 2, Loss::Margin);
        for start in [&far, &larger] {
            let found = pgd_from(
                &net,
                &mut ws,
                x.view(),
                Some(start.view()),
                &targets,
                cfg,
                &mut rng,
            );
            inside(&found.adv, Grid::Real, "pgd");
            inside(&found.best, Grid::Real, "pgd best");
        }
    }
}

/// Exact robust accuracy per ε of a tiny model's images by brute force over every
/// combination of reachable codes, in real numbers and on the `u8` grid.
fn exact_robust(net: &Network, data: &Batch<f32>, eps: &[f32]) -> Vec<(f64, f64)> {
    let filter = ElementFilter::of(net).unwrap();
    let x = data.images();
    eps.iter()
        .map(|&e| {
            let (mut real, mut u8) = (0, 0);
            for (img, &y) in x.outer_iter().zip(&data.labels) {
                let one = img.insert_axis(Axis(0)).to_owned();
                real += usize::from(!brute_force_on(net, &filter, &one, y, e, Grid::Real));
                u8 += usize::from(!brute_force_on(net, &filter, &one, y, e, Grid::U8));
            }
            let n = data.len() as f64;
            (real as f64 / n, u8 as f64 / n)
        })
        .collect()
}

/// The two cheaper sweeps report only what is true: on seeded tiny models (few enough
/// pixels for brute force over every combination of reachable codes), the robust
/// accuracy at every ε, in real numbers and on the `u8` grid, is never below the exact
/// one. A warm sweep (each ε from the points of the ε before) would show an example
/// carried from a smaller ball, or from another image, that left the ball as a break
/// brute force cannot find; a descending sweep must still give curves that never rise
/// with ε. Each still finds at least 95 % of the breaks there are.
#[test]
fn cheap_sweeps_report_only_true_breaks_and_find_them() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eeb);
    let eps = [0.0, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.4];
    let warm = WarmStart {
        pgd_random: 0,
        codes_fresh: 1,
    };
    let sweeps = [
        ("warm", Some(warm), Order::Ascending),
        ("descending", None, Order::Descending { settle_after: 1 }),
        ("descending, 2", None, Order::Descending { settle_after: 2 }),
    ];
    let (mut breaks, mut found) = ([0usize; 3], [0usize; 3]);
    for model in 0..12 {
        let pixels = rng.random_range(3..=5u16);
        let net = tiny_model(&mut rng, pixels);
        let n = 30;
        let images = Array4::from_shape_fn((n, 1, pixels as usize, 1), |_| {
            pixel_to_unit(rng.random_range(0..=255u8))
        });
        let labels = classify(&net, images.view(), &mut Workspace::new());
        let data = Batch::new(images, labels, "tiny");
        let exact = exact_robust(&net, &data, &eps);
        let pgd = PgdConfig::apgd(0.0, 10, 2, Loss::Margin);
        let codes = FilterCodesConfig {
            steps: 20,
            restarts: 3,
            ..FilterCodesConfig::new(0.0, Grid::Real)
        };
        for (si, &(sweep, warm_start, order)) in sweeps.iter().enumerate() {
            for plan in [Plan::Each, Plan::Cascade] {
                let cfg = WhiteBoxConfig {
                    attacks: all_attacks(pgd, codes),
                    plan,
                    use_labels: true,
                    seed: 5,
                    warm_start,
                    order,
                };
                let r = white_box(&net, &data, &eps, &cfg, &Silent);
                for (k, &(real, u8)) in exact.iter().enumerate() {
                    let p = r.worst_case.points[k];
                    let what = format!("{sweep} model {model} {plan:?} ε {}", eps[k]);
                    assert!(
                        p.accuracy >= real - 1e-9,
                        "{what}: {} < exact {real}",
                        p.accuracy
                    );
                    let on_grid = p.accuracy_u8.unwrap();
                    assert!(on_grid >= u8 - 1e-9, "{what}: u8 {on_grid} < exact {u8}");
                    breaks[si] += ((1.0 - real) * n as f64).round() as usize;
                    found[si] += ((1.0 - p.accuracy) * n as f64).round() as usize;
                }
                for report in r.attacks.iter().chain([&r.worst_case]) {
                    for w in report.points.windows(2) {
                        assert!(
                            w[1].accuracy <= w[0].accuracy && w[1].accuracy_u8 <= w[0].accuracy_u8,
                            "{sweep} model {model} {plan:?} {}: rises from ε {} to {}",
                            report.attack,
                            w[0].eps,
                            w[1].eps
                        );
                    }
                }
            }
        }
    }
    for (si, (sweep, ..)) in sweeps.iter().enumerate() {
        let (b, f) = (breaks[si], found[si]);
        eprintln!("{sweep}: found {f} of {b} breaks");
        assert!(b >= 200, "{sweep}: only {b} breaks to find");
        assert!(f as f64 >= 0.95 * b as f64, "{sweep}: found {f} of {b}");
    }
}

/// Warm starts and settling need another ε: a sweep of one ε gives the same result
/// with and without warm starts, in either order.
#[test]
fn one_eps_is_the_same_however_swept() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x0e05);
    for _ in 0..3 {
        let pixels = rng.random_range(6..=12u16);
        let net = tiny_model(&mut rng, pixels);
        let images = Array4::from_shape_fn((40, 1, pixels as usize, 1), |_| {
            pixel_to_unit(rng.random_range(0..=255u8))
        });
        let labels = classify(&net, images.view(), &mut Workspace::new());
        let data = Batch::new(images, labels, "tiny");
        let pgd = PgdConfig::apgd(0.0, 10, 3, Loss::CrossEntropy);
        let codes = FilterCodesConfig {
            steps: 20,
            restarts: 3,
            ..FilterCodesConfig::new(0.0, Grid::Real)
        };
        let run = |warm_start, order| -> WhiteBoxResult {
            let cfg = WhiteBoxConfig {
                attacks: all_attacks(pgd, codes),
                plan: Plan::Each,
                use_labels: true,
                seed: 9,
                warm_start,
                order,
            };
            white_box(&net, &data, &[0.2], &cfg, &Silent)
        };
        let cold = run(None, Order::Ascending);
        for other in [
            run(Some(WarmStart::DEFAULT), Order::Ascending),
            run(None, Order::Descending { settle_after: 1 }),
        ] {
            for (o, c) in other.attacks.iter().zip(&cold.attacks) {
                assert_eq!(
                    (&o.points, o.queries),
                    (&c.points, c.queries),
                    "{}",
                    o.attack
                );
            }
        }
    }
}
