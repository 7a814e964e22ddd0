//! White-box robustness over an ε sweep: each attack's accuracy, and the per-image
//! worst case over all of them, in real numbers and on the `u8` pixel grid.
//!
//! Three rules make a sweep both stronger and cheaper than independent runs:
//! - an image broken at some ε stays broken at every larger one (its adversarial
//!   example lies in every larger ball): in [`Order::Ascending`] it is never attacked
//!   again, in [`Order::Descending`] the curves are closed that way at the end;
//! - an image whose ball reaches a single filter code in every element (exactly, see
//!   [`spartan_core::codes`]) gives the same logits everywhere in the ball: no attack
//!   can change its answer, so none is run;
//! - balls nest, so the best point an attack found for a still-robust image at one ε
//!   (its highest loss) lies in every larger ball. With [`WhiteBoxConfig::warm_start`]
//!   the attack starts the image's next ε there instead of spending its whole budget
//!   from scratch again: PGD makes one run from that point plus
//!   [`WarmStart::pgd_random`] random ones, the filter-code search climbs from its
//!   codes (in real numbers also from the codes the `u8` search just reached) plus
//!   [`WarmStart::codes_fresh`] fresh searches. The first ε at which an attack works
//!   on an image gets the full budget, so a sweep of one ε is unchanged; an image
//!   broken in real numbers but not on the grid gets PGD's full budget (its carried
//!   point already wins, and a run from it would stop at once). Whatever an attack
//!   starts from, every point it returns is projected on (or chosen in) the current
//!   ball, so a warm start can make it stronger or weaker, never unsound.
//!
//! [`Order::Descending`] adds a fourth, which is an assumption rather than a fact: an
//! image a search attack has failed on at a few ε in a row is taken as robust to it at
//! every smaller ε, whose balls lie inside the ones the search failed in. A robust
//! image then costs those few full searches instead of one per ε below the largest it
//! survives. It holds where the attacks are converged at each ε, not everywhere
//! (docs/attacks.md), so the ascending order is the default.
//!
//! An image counts as robust in the worst case only if it survives every attack. In
//! the [`Plan::Cascade`] plan each attack only sees the images the ones before it left
//! standing (cheap attacks first, the expensive ones on the survivors); in
//! [`Plan::Each`] every attack runs on its own, so each has its own accuracy too.

use super::filter_codes::{filter_codes_from, movable, ElementFilter, FilterCodesConfig, Images};
use super::gradient::{fgsm, Loss};
use super::pgd::{pgd_from, PgdConfig, Schedule};
use super::sweep::{AttackReport, SweepPoint, ATTACK_BATCH};
use super::threat::{round_images, Grid};
use crate::data::Batch;
use crate::eval::classify;
use crate::nn::{GradMode, Network, Workspace};
use crate::observe::Observer;
use ndarray::{Array4, ArrayView4, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// One white-box attack of a sweep (its ε is the sweep's).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WhiteBoxAttack {
    /// One signed-gradient step of size ε.
    Fgsm {
        /// How steps are differentiated (BPDA).
        grad: GradMode,
    },
    /// Projected gradient descent (its `eps` is ignored).
    Pgd(PgdConfig),
    /// The search over reachable filter codes (its `eps` and `grid` are ignored: it
    /// runs on the `u8` grid for the device's threat model and on floats otherwise).
    FilterCodes(FilterCodesConfig),
}

impl WhiteBoxAttack {
    /// Short name: `fgsm`, `pgd`, `pgd-identity`, `filter-codes`, …
    pub fn name(&self) -> String {
        let with_mode = |base: &str, grad| match grad {
            GradMode::Surrogate => base.to_string(),
            GradMode::Identity => format!("{base}-identity"),
            GradMode::Exact => format!("{base}-exact"),
        };
        match self {
            WhiteBoxAttack::Fgsm { grad } => with_mode("fgsm", *grad),
            WhiteBoxAttack::Pgd(c) => with_mode("pgd", c.grad),
            WhiteBoxAttack::FilterCodes(_) => "filter-codes".into(),
        }
    }

    /// What it does, with its settings.
    pub fn describe(&self) -> String {
        let loss = |l: Loss| match l {
            Loss::CrossEntropy => "cross-entropy",
            Loss::Margin => "margin (CW) loss",
        };
        match self {
            WhiteBoxAttack::Fgsm { grad } => format!("FGSM (ℓ∞), BPDA {grad:?}"),
            WhiteBoxAttack::Pgd(c) => {
                let schedule = match c.schedule {
                    Schedule::Constant { factor } => format!("constant steps of {factor}·ε/{}", c.steps),
                    Schedule::Apgd => "APGD step schedule (2ε, halved at checkpoints, momentum 0.75)".into(),
                };
                format!(
                    "PGD (ℓ∞), {} steps × {} restart(s), {schedule}, {}, random start: {}, stop on success, BPDA {:?}",
                    c.steps, c.restarts, loss(c.loss), c.random_start, c.grad
                )
            }
            WhiteBoxAttack::FilterCodes(c) => format!(
                "filter-code search (exact codes of layer 1, first-order scores from layer 2 on, true loss checked every step), {} steps × {} restart(s), {}",
                c.steps, c.restarts, loss(c.loss)
            ),
        }
    }

    /// Whether it searches (several starts or steps per image), so that a descending
    /// sweep settles the images it fails on (FGSM, one step, runs at every ε).
    fn searches(&self) -> bool {
        !matches!(self, WhiteBoxAttack::Fgsm { .. })
    }

    /// The same attack with surrogate gradients (to spot attacks that only differ in
    /// their BPDA mode on a network without steps).
    fn without_bpda(self) -> Self {
        match self {
            WhiteBoxAttack::Fgsm { .. } => WhiteBoxAttack::Fgsm {
                grad: GradMode::Surrogate,
            },
            WhiteBoxAttack::Pgd(c) => WhiteBoxAttack::Pgd(PgdConfig {
                grad: GradMode::Surrogate,
                ..c
            }),
            a => a,
        }
    }
}

/// How the attacks of a sweep share the images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Each attack only on the images every attack before it failed on: the cheapest
    /// way to the worst case. Each attack's points are the worst case after it.
    Cascade,
    /// Every attack on every image it has not broken itself: each attack's own accuracy.
    Each,
}

/// A white-box sweep's settings besides the ε values.
#[derive(Clone, Debug, PartialEq)]
pub struct WhiteBoxConfig {
    /// The attacks (in a cascade, the cheapest per broken image first).
    pub attacks: Vec<WhiteBoxAttack>,
    /// How they share the images.
    pub plan: Plan,
    /// Attack the true labels; otherwise the model's own predictions (no label leaking).
    pub use_labels: bool,
    /// Seed of every random choice.
    pub seed: u64,
    /// Start each attack at each ε from the best point it found for the image at the
    /// ε before (module docs); `None`: every ε from scratch. Only in
    /// [`Order::Ascending`] (in the other order the points carried would lie outside
    /// the next, smaller ball).
    pub warm_start: Option<WarmStart>,
    /// The order the ε values are visited in.
    pub order: Order,
}

/// The order a sweep visits its ε values in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Smallest first: an image broken at some ε is not attacked again at the larger
    /// ones, and every image still standing gets every attack's full budget at every ε.
    Ascending,
    /// Largest first: once a search attack (PGD, the filter-code search) has failed on
    /// an image at `settle_after` ε values in a row, the image counts as robust to it at
    /// every smaller ε, without more searching. Those balls lie inside the ones the
    /// search just failed in, so this only assumes the search would fail there too; in
    /// exchange a robust image costs `settle_after` full budgets instead of one per ε
    /// below the largest it survives. FGSM, one gradient per image, runs at every ε.
    Descending {
        /// Failures in a row that settle an image (at least 1).
        settle_after: usize,
    },
}

/// How many fresh starts an attack still makes, besides its warm start, at an ε where
/// an image has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarmStart {
    /// PGD runs from random points after the one from the warm point.
    pub pgd_random: usize,
    /// Filter-code searches after the ones from warm codes (the first from the clean
    /// codes, the others from random codes).
    pub codes_fresh: usize,
}

impl WarmStart {
    /// What `--warm-start` uses unless told otherwise: PGD makes two runs instead of
    /// its default four, the filter-code search its warm starts and four more instead
    /// of its default ten.
    pub const DEFAULT: WarmStart = WarmStart {
        pgd_random: 1,
        codes_fresh: 4,
    };
}

/// Every white-box attack, in the order a cascade runs them best: FGSM (one gradient
/// per image), the filter-code search (the strongest, and cheap per image), then PGD
/// with both BPDA modes (`pgd` as the template), which spends its full budget only on
/// the images nothing before it broke.
pub fn all_attacks(pgd: PgdConfig, codes: FilterCodesConfig) -> Vec<WhiteBoxAttack> {
    vec![
        WhiteBoxAttack::Fgsm {
            grad: GradMode::Surrogate,
        },
        WhiteBoxAttack::FilterCodes(codes),
        WhiteBoxAttack::Pgd(PgdConfig {
            grad: GradMode::Surrogate,
            ..pgd
        }),
        WhiteBoxAttack::Pgd(PgdConfig {
            grad: GradMode::Identity,
            ..pgd
        }),
    ]
}

/// What a sweep found.
#[derive(Clone, Debug, PartialEq)]
pub struct WhiteBoxResult {
    /// One report per attack run (in [`Plan::Cascade`], the worst case after it).
    pub attacks: Vec<AttackReport>,
    /// An image is robust only if it survived every attack.
    pub worst_case: AttackReport,
    /// Attacks left out, and why.
    pub notes: Vec<String>,
}

/// Which images are still robust: in real numbers and on the `u8` grid.
#[derive(Clone, Debug)]
struct Tally {
    real: Vec<bool>,
    u8: Vec<bool>,
}

impl Tally {
    fn point(&self, eps: f32) -> SweepPoint {
        let frac = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64 / v.len().max(1) as f64;
        SweepPoint {
            eps,
            accuracy: frac(&self.real),
            accuracy_u8: Some(frac(&self.u8)),
            n: self.real.len(),
        }
    }

    /// Standing in both.
    fn and(&self, other: &Tally) -> Tally {
        let both = |a: &[bool], b: &[bool]| a.iter().zip(b).map(|(x, y)| *x && *y).collect();
        Tally {
            real: both(&self.real, &other.real),
            u8: both(&self.u8, &other.u8),
        }
    }
}

/// Runs a white-box sweep over `eps` on `data` (ε in increasing order in the reports).
pub fn white_box(
    net: &Network,
    data: &Batch<f32>,
    eps: &[f32],
    cfg: &WhiteBoxConfig,
    observer: &dyn Observer,
) -> WhiteBoxResult {
    let mut ws = Workspace::new();
    let x = data.images();
    let clean = classify(net, x, &mut ws);
    let correct: Vec<bool> = clean
        .iter()
        .zip(&data.labels)
        .map(|(a, b)| a == b)
        .collect();
    let clean_accuracy = correct.iter().filter(|&&c| c).count() as f64 / data.len().max(1) as f64;
    let targets = if cfg.use_labels {
        data.labels.clone()
    } else {
        clean
    };
    let filter = ElementFilter::of(net);
    let has_steps = net
        .spec()
        .layers
        .iter()
        .any(|l| l.activation().is_some_and(|a| a.is_binary()));
    let mut notes = Vec::new();
    let mut attacks: Vec<WhiteBoxAttack> = Vec::new();
    for &a in &cfg.attacks {
        if let (WhiteBoxAttack::FilterCodes(_), Err(why)) = (a, &filter) {
            notes.push(format!("{} left out: {why}", a.name()));
        } else if !has_steps && attacks.iter().any(|b| b.without_bpda() == a.without_bpda()) {
            notes.push(format!(
                "{} left out: the network has no step, so BPDA modes give the same gradients",
                a.name()
            ));
        } else if !attacks.contains(&a) {
            attacks.push(a);
        }
    }
    let mut eps: Vec<f32> = eps.to_vec();
    eps.sort_by(f32::total_cmp);
    eps.dedup();
    let n = data.len();
    let start = Tally {
        real: correct.clone(),
        u8: correct,
    };
    let nothing = Tally {
        real: vec![false; n],
        u8: vec![false; n],
    };
    let warm_start = match cfg.order {
        Order::Ascending => cfg.warm_start,
        Order::Descending { .. } => None,
    };
    // What is standing now: per attack (each plan), or one worst case (cascade).
    let mut tallies = vec![start.clone(); attacks.len()];
    let mut worst = start.clone();
    // Per attack, the failures in a row on each image and the images it is not run on
    // any more (descending order).
    let mut streaks = vec![Streak::new(n); attacks.len()];
    let mut settled = vec![nothing; attacks.len()];
    // Per attack and ε (ascending), what was standing after it; and the worst case.
    let mut after: Vec<Vec<Tally>> = vec![vec![start.clone(); eps.len()]; attacks.len()];
    let mut worst_at = vec![start.clone(); eps.len()];
    let mut seconds = vec![0.0f64; attacks.len()];
    let mut queries = vec![0u64; attacks.len()];
    let mut carried: Vec<Carried> = attacks.iter().map(|_| Carried::new(x)).collect();
    let visit: Vec<usize> = match cfg.order {
        Order::Ascending => (0..eps.len()).collect(),
        Order::Descending { .. } => (0..eps.len()).rev().collect(),
    };
    observer.begin("white-box", (eps.len() * attacks.len()) as u64, 0);
    for ei in visit {
        let e = eps[ei];
        let moves = match &filter {
            Ok(f) if e > 0.0 => movable(f, x, e, Grid::Real),
            _ => vec![e > 0.0; n],
        };
        for (ai, attack) in attacks.iter().enumerate() {
            let started = Instant::now();
            let tally = match cfg.plan {
                Plan::Each => &mut tallies[ai],
                Plan::Cascade => &mut worst,
            };
            let run = Runner {
                net,
                filter: filter.as_ref().ok(),
                x,
                targets: &targets,
                eps: e,
                seed: cfg.seed ^ ((ai as u64) << 48) ^ ((ei as u64) << 32),
                warm_start,
            };
            queries[ai] += run.attack(
                *attack,
                &mut ws,
                tally,
                &settled[ai],
                &moves,
                &mut carried[ai],
            );
            seconds[ai] += started.elapsed().as_secs_f64();
            after[ai][ei] = tally.clone();
            observer.advance(1);
        }
        worst_at[ei] = match cfg.plan {
            Plan::Each => tallies.iter().fold(start.clone(), |w, t| w.and(t)),
            Plan::Cascade => worst.clone(),
        };
        if let Order::Descending { settle_after } = cfg.order {
            // What stood at this ε and enough larger ones in a row is taken as standing
            // at the smaller ones; each ε starts again from the clean answers.
            for (ai, attack) in attacks.iter().enumerate() {
                if attack.searches() {
                    let standing = match cfg.plan {
                        Plan::Each => &tallies[ai],
                        Plan::Cascade => &worst,
                    };
                    settled[ai] = streaks[ai].extend(standing, settle_after);
                }
                tallies[ai] = start.clone();
            }
            worst = start.clone();
        }
        let p = worst_at[ei].point(e);
        observer.status(&format!(
            "ε={e}: {:.1}% ({:.1}% on u8)",
            p.accuracy * 100.0,
            p.accuracy_u8.unwrap_or(0.0) * 100.0
        ));
    }
    observer.end();
    let curve = |mut series: Vec<Tally>| -> Vec<SweepPoint> {
        // An example in a smaller ball lies in every larger one.
        for k in 1..series.len() {
            let before = series[k - 1].clone();
            series[k] = series[k].and(&before);
        }
        series.iter().zip(&eps).map(|(t, &e)| t.point(e)).collect()
    };
    let points: Vec<Vec<SweepPoint>> = after.into_iter().map(curve).collect();
    let worst_points = curve(worst_at);
    let whom = if cfg.use_labels {
        "true labels"
    } else {
        "model predictions"
    };
    let warm = match cfg.warm_start {
        Some(w) => format!(
            "; each ε after an image's first starts from the best point of the ε before (PGD: that run + {} random, filter codes: those codes + {} fresh)",
            w.pgd_random, w.codes_fresh
        ),
        None => String::new(),
    };
    let report =
        |attack: String, settings: String, points: Vec<SweepPoint>, q: u64, s: f64| AttackReport {
            attack,
            settings: format!("{settings}; targets: {whom}, seed {}{warm}", cfg.seed),
            clean_accuracy,
            n: data.len(),
            queries: q,
            substitute_accuracy: None,
            substitute_agreement: None,
            points,
            seconds: s,
        };
    let cascade = cfg.plan == Plan::Cascade;
    let names: Vec<String> = attacks.iter().map(|a| a.name()).collect();
    let reports: Vec<AttackReport> = attacks
        .iter()
        .enumerate()
        .zip(points)
        .map(|((ai, a), pts)| {
            let (name, settings) = if cascade {
                (
                    format!("after-{}", names[ai]),
                    format!(
                        "worst case after {} (cascade): {}",
                        names[..=ai].join(", "),
                        a.describe()
                    ),
                )
            } else {
                (names[ai].clone(), a.describe())
            };
            report(name, settings, pts, queries[ai], seconds[ai])
        })
        .collect();
    let worst_case = report(
        "worst-case".into(),
        format!(
            "per-image worst case over {} ({})",
            names.join(", "),
            if cascade {
                "cascade: each attack on the survivors of the ones before"
            } else {
                "every attack on every image"
            }
        ),
        worst_points,
        queries.iter().sum(),
        seconds.iter().sum(),
    );
    WhiteBoxResult {
        attacks: reports,
        worst_case,
        notes,
    }
}

/// Per image, at how many ε in a row (descending) an attack has failed, in real numbers
/// and on the `u8` grid.
#[derive(Clone, Debug)]
struct Streak {
    real: Vec<usize>,
    u8: Vec<usize>,
}

impl Streak {
    fn new(n: usize) -> Self {
        Streak {
            real: vec![0; n],
            u8: vec![0; n],
        }
    }

    /// Counts one more ε where the images of `standing` stood (a broken one starts
    /// again from zero), and returns those that have stood at `settle_after` in a row.
    fn extend(&mut self, standing: &Tally, settle_after: usize) -> Tally {
        let step = |count: &mut Vec<usize>, stood: &[bool]| -> Vec<bool> {
            count
                .iter_mut()
                .zip(stood)
                .map(|(c, &s)| {
                    *c = if s { *c + 1 } else { 0 };
                    *c >= settle_after.max(1)
                })
                .collect()
        };
        Tally {
            real: step(&mut self.real, &standing.real),
            u8: step(&mut self.u8, &standing.u8),
        }
    }
}

/// Per image, the best point an attack found for it at the last ε it attacked it (the
/// first misclassified one, or the one of highest loss): inside every larger ball,
/// where the next ε starts. The filter-code search keeps one per grid.
struct Carried {
    real: Array4<f32>,
    u8: Array4<f32>,
    has_real: Vec<bool>,
    has_u8: Vec<bool>,
}

impl Carried {
    fn new(x: ArrayView4<'_, f32>) -> Self {
        Carried {
            real: x.to_owned(),
            u8: x.to_owned(),
            has_real: vec![false; x.dim().0],
            has_u8: vec![false; x.dim().0],
        }
    }

    /// The points of `grid` and which images have one.
    fn grid(&mut self, grid: Grid) -> (&mut Array4<f32>, &mut Vec<bool>) {
        match grid {
            Grid::Real => (&mut self.real, &mut self.has_real),
            Grid::U8 => (&mut self.u8, &mut self.has_u8),
        }
    }

    /// Keeps `found` (rows in the order of `images`) as their points on `grid`.
    fn keep(&mut self, grid: Grid, images: &[usize], found: ArrayView4<'_, f32>) {
        let (points, has) = self.grid(grid);
        for (j, &i) in images.iter().enumerate() {
            points
                .index_axis_mut(Axis(0), i)
                .assign(&found.index_axis(Axis(0), j));
            has[i] = true;
        }
    }
}

/// One attack at one ε over the images of a sweep.
struct Runner<'a> {
    net: &'a Network,
    filter: Option<&'a ElementFilter>,
    x: ArrayView4<'a, f32>,
    targets: &'a [u8],
    eps: f32,
    seed: u64,
    warm_start: Option<WarmStart>,
}

impl Runner<'_> {
    /// Attacks the images `tally` still holds robust, unless `settled` (and whose ball
    /// can change the answer), those with a point carried from the ε before starting
    /// there; marks the ones broken and carries the best points on. Returns the queries
    /// made.
    fn attack(
        &self,
        attack: WhiteBoxAttack,
        ws: &mut Workspace,
        tally: &mut Tally,
        settled: &Tally,
        moves: &[bool],
        carried: &mut Carried,
    ) -> u64 {
        let mut queries = 0;
        let open = |t: &Tally, grid: Option<Grid>| -> Vec<usize> {
            let real = |i: usize| t.real[i] && !settled.real[i];
            let u8 = |i: usize| t.u8[i] && !settled.u8[i];
            (0..t.real.len())
                .filter(|&i| moves[i])
                .filter(|&i| match grid {
                    None => real(i) || u8(i),
                    Some(Grid::Real) => real(i),
                    Some(Grid::U8) => u8(i),
                })
                .collect()
        };
        // The images without a point from the ε before (`WARM` false), and the others.
        let split = |idx: Vec<usize>, has: &[bool]| -> [(bool, Vec<usize>); 2] {
            let (warm, cold) = match self.warm_start {
                Some(_) => idx.into_iter().partition(|&i| has[i]),
                None => (Vec::new(), idx),
            };
            [(false, cold), (true, warm)]
        };
        match attack {
            WhiteBoxAttack::FilterCodes(c) => {
                let filter = self.filter.expect("filter-code attacks need a filter");
                // On the grid first: an example there is one in real numbers too. At a
                // warm ε the search in real numbers also starts from the codes the grid
                // search just reached (reachable in real numbers too).
                for grid in [Grid::U8, Grid::Real] {
                    for (warm, idx) in split(open(tally, Some(grid)), carried.grid(grid).1) {
                        let restarts = match self.warm_start {
                            Some(w) if warm => w.codes_fresh,
                            _ => c.restarts,
                        };
                        let cfg = FilterCodesConfig {
                            eps: self.eps,
                            grid,
                            restarts,
                            ..c
                        };
                        queries += self.batches(&idx, warm, ws, tally, |ws, chunk, x, t, rng| {
                            let mut starts = Vec::new();
                            if warm {
                                starts.push(carried.grid(grid).0.select(Axis(0), chunk));
                                if grid == Grid::Real {
                                    starts.push(carried.u8.select(Axis(0), chunk));
                                }
                            }
                            let warm: Vec<_> = starts.iter().map(|s| s.view()).collect();
                            let images = Images {
                                x,
                                targets: t,
                                warm: &warm,
                            };
                            let (adv, q) =
                                filter_codes_from(self.net, filter, ws, images, cfg, rng);
                            if self.warm_start.is_some() {
                                carried.keep(grid, chunk, adv.view());
                            }
                            (adv, q)
                        });
                    }
                }
            }
            WhiteBoxAttack::Fgsm { grad } => {
                let idx = open(tally, None);
                queries += self.batches(&idx, false, ws, tally, |ws, _, x, t, _| {
                    (fgsm(self.net, ws, x, t, self.eps, grad), t.len() as u64)
                });
            }
            WhiteBoxAttack::Pgd(c) => {
                // An image broken in real numbers but not on the grid starts afresh:
                // its carried point is misclassified already, so a run from it would
                // stop at once, with what rounding to the grid undid.
                let warm: Vec<bool> = (0..moves.len())
                    .map(|i| carried.has_real[i] && tally.real[i])
                    .collect();
                for (warm, idx) in split(open(tally, None), &warm) {
                    let restarts = match self.warm_start {
                        Some(w) if warm => 1 + w.pgd_random,
                        _ => c.restarts,
                    };
                    let cfg = PgdConfig {
                        eps: self.eps,
                        restarts,
                        ..c
                    };
                    queries += self.batches(&idx, warm, ws, tally, |ws, chunk, x, t, rng| {
                        let start = warm.then(|| carried.real.select(Axis(0), chunk));
                        let found = pgd_from(
                            self.net,
                            ws,
                            x,
                            start.as_ref().map(|s| s.view()),
                            t,
                            cfg,
                            rng,
                        );
                        if self.warm_start.is_some() {
                            carried.keep(Grid::Real, chunk, found.best.view());
                        }
                        (found.adv, found.queries)
                    });
                }
            }
        }
        queries
    }

    /// Runs `attack` on images `idx` in batches (`warm` tells the random streams of the
    /// two groups of images of an ε apart); an image is broken in real numbers if its
    /// adversarial example is misclassified, and on the `u8` grid (hence in real
    /// numbers too) if that example rounded to the grid is.
    fn batches(
        &self,
        idx: &[usize],
        warm: bool,
        ws: &mut Workspace,
        tally: &mut Tally,
        mut attack: impl FnMut(
            &mut Workspace,
            &[usize],
            ArrayView4<'_, f32>,
            &[u8],
            &mut ChaCha8Rng,
        ) -> (Array4<f32>, u64),
    ) -> u64 {
        let mut queries = 0;
        for (bi, chunk) in idx.chunks(ATTACK_BATCH).enumerate() {
            let xs = self.x.select(Axis(0), chunk);
            let ts: Vec<u8> = chunk.iter().map(|&i| self.targets[i]).collect();
            let mut rng =
                ChaCha8Rng::seed_from_u64(self.seed ^ bi as u64 ^ (u64::from(warm) << 16));
            let (adv, q) = attack(ws, chunk, xs.view(), &ts, &mut rng);
            queries += q;
            let real = classify(self.net, adv.view(), ws);
            let on_grid = classify(
                self.net,
                round_images(xs.view(), adv.view(), self.eps).view(),
                ws,
            );
            for (j, &i) in chunk.iter().enumerate() {
                if on_grid[j] != ts[j] {
                    tally.u8[i] = false;
                    tally.real[i] = false;
                }
                if real[j] != ts[j] {
                    tally.real[i] = false;
                }
            }
        }
        queries
    }
}
