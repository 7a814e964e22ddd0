//! Projected gradient descent (ℓ∞) with restarts, a constant or an APGD step schedule,
//! and cross-entropy or margin loss (docs/attacks.md).
//!
//! APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
//! ensemble of diverse parameter-free attacks") starts with steps of 2ε, adds momentum,
//! and at checkpoints halves an image's step and goes back to its best point when the
//! loss stopped rising: the schedule robustness evaluations now use, because a fixed
//! step either stalls (too small) or oscillates (too large) on some images.

use super::gradient::{active_gradient, sign, Loss, Score};
use super::threat::project;
use crate::nn::{GradMode, Network, Pass, Workspace};
use ndarray::{Array1, Array4, ArrayView4, Axis, Zip};
use rand::Rng;

/// Steps per restart of the strong default PGD ([`PgdConfig::strong`]).
pub const STRONG_STEPS: usize = 50;
/// Restarts of the strong default PGD: on candidate-c at ε 0.3, doubling either this or
/// [`STRONG_STEPS`] changes robust accuracy by less than half a point (docs/attacks.md).
pub const STRONG_RESTARTS: usize = 4;

/// How the step size evolves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// The same signed step every iteration (Madry et al.): `factor · ε / steps`.
    Constant {
        /// Step size as a multiple of `ε / steps` (2.5 is the usual choice).
        factor: f32,
    },
    /// APGD: steps of 2ε with momentum 0.75, halved per image at checkpoints where the
    /// loss stopped rising (restarting from the image's best point).
    Apgd,
}

/// PGD settings (ℓ∞).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PgdConfig {
    /// Radius.
    pub eps: f32,
    /// Gradient steps per restart.
    pub steps: usize,
    /// Runs from fresh random starts (at least 1); later runs only attack images the
    /// earlier ones did not break.
    pub restarts: usize,
    /// Step size schedule.
    pub schedule: Schedule,
    /// What the attack climbs.
    pub loss: Loss,
    /// Freeze an image as soon as it is misclassified (the attack has won on it):
    /// the usual shortcut of attack libraries, which only ever lowers accuracy and
    /// saves most of the work on weak models.
    pub early_stop: bool,
    /// Start from a uniform random point of the ε-ball (the first run; later runs
    /// always start at random points).
    pub random_start: bool,
    /// How steps are differentiated (BPDA).
    pub grad: GradMode,
}

impl PgdConfig {
    /// Madry et al.'s setting: `steps` steps of `2.5·ε/steps` from one random start.
    pub fn standard(eps: f32, steps: usize) -> Self {
        PgdConfig {
            eps,
            steps,
            restarts: 1,
            schedule: Schedule::Constant { factor: 2.5 },
            loss: Loss::CrossEntropy,
            early_stop: true,
            random_start: true,
            grad: GradMode::Surrogate,
        }
    }

    /// The default of `spartan attack`: APGD, [`STRONG_STEPS`] × [`STRONG_RESTARTS`],
    /// cross-entropy.
    pub fn strong(eps: f32, grad: GradMode) -> Self {
        PgdConfig {
            grad,
            ..PgdConfig::apgd(eps, STRONG_STEPS, STRONG_RESTARTS, Loss::CrossEntropy)
        }
    }

    /// APGD with `steps` steps and `restarts` random starts.
    pub fn apgd(eps: f32, steps: usize, restarts: usize, loss: Loss) -> Self {
        PgdConfig {
            restarts,
            schedule: Schedule::Apgd,
            loss,
            ..PgdConfig::standard(eps, steps)
        }
    }
}

/// Projected gradient ascent on the loss from `cfg.restarts` starts. Returns, per
/// image, the first misclassified point found, or else the point of highest loss; and
/// the number of gradients computed (queries).
pub fn pgd(
    net: &Network,
    ws: &mut Workspace,
    x: ArrayView4<'_, f32>,
    targets: &[u8],
    cfg: PgdConfig,
    rng: &mut impl Rng,
) -> (Array4<f32>, u64) {
    let found = pgd_from(net, ws, x, None, targets, cfg, rng);
    (found.adv, found.queries)
}

/// What [`pgd_from`] found.
#[derive(Clone, Debug)]
pub struct PgdFound {
    /// Per image, the first misclassified point found, or else the highest-loss point
    /// of the last run (what [`pgd`] returns).
    pub adv: Array4<f32>,
    /// Per image, the first misclassified point found, or else the highest-loss point
    /// of all runs: where a sweep's next, larger ε starts.
    pub best: Array4<f32>,
    /// Gradients computed.
    pub queries: u64,
}

/// [`pgd`], whose first run starts from `warm` (each row projected on its image's
/// ball, so any point will do) when given; the `cfg.restarts − 1` later runs, or all
/// `cfg.restarts` without a warm start, are as in [`pgd`].
pub fn pgd_from(
    net: &Network,
    ws: &mut Workspace,
    x: ArrayView4<'_, f32>,
    warm: Option<ArrayView4<'_, f32>>,
    targets: &[u8],
    cfg: PgdConfig,
    rng: &mut impl Rng,
) -> PgdFound {
    let mut out = x.to_owned();
    let mut best = x.to_owned();
    let mut best_loss = vec![f32::NEG_INFINITY; targets.len()];
    let mut queries = 0;
    let mut open: Vec<usize> = (0..targets.len()).collect();
    for restart in 0..cfg.restarts.max(1) {
        if open.is_empty() {
            break;
        }
        let xs = x.select(Axis(0), &open);
        let ts: Vec<u8> = open.iter().map(|&i| targets[i]).collect();
        let start = match warm {
            Some(w) if restart == 0 => Start::From(w.select(Axis(0), &open)),
            _ if cfg.random_start || restart > 0 => Start::Random,
            _ => Start::Clean,
        };
        let run = Run::new(xs.view(), &ts, cfg, start, rng).climb(net, ws);
        queries += run.queries;
        for (j, &i) in open.iter().enumerate() {
            let point = run.best.index_axis(Axis(0), j);
            out.index_axis_mut(Axis(0), i).assign(&point);
            if run.won[j] || run.best_loss[j] > best_loss[i] {
                best_loss[i] = run.best_loss[j];
                best.index_axis_mut(Axis(0), i).assign(&point);
            }
        }
        open = open
            .iter()
            .zip(&run.won)
            .filter(|&(_, &w)| !w)
            .map(|(&i, _)| i)
            .collect();
    }
    PgdFound {
        adv: out,
        best,
        queries,
    }
}

/// Where a run starts.
enum Start {
    /// At the clean images.
    Clean,
    /// At uniform random points of the balls.
    Random,
    /// At these points, projected on the balls.
    From(Array4<f32>),
}

/// APGD's momentum.
const MOMENTUM: f32 = 0.75;
/// APGD halves the step when the loss rose in fewer than this fraction of the steps
/// since the last checkpoint.
const RISE_FRACTION: f32 = 0.75;

/// One run of PGD from one start over a batch, with per-image state.
struct Run<'a> {
    x: ArrayView4<'a, f32>,
    targets: &'a [u8],
    cfg: PgdConfig,
    /// Current iterate `x^(k)` and the one before.
    adv: Array4<f32>,
    prev: Array4<f32>,
    /// First misclassified or highest-loss point so far, its loss and its gradient.
    best: Array4<f32>,
    best_loss: Array1<f32>,
    best_grad: Array4<f32>,
    won: Vec<bool>,
    /// Per-image step size, the loss at the last iterate, rises since the last
    /// checkpoint, the best loss at the last checkpoint, and whether the step was
    /// halved there.
    eta: Vec<f32>,
    last_loss: Vec<f32>,
    rises: Vec<u32>,
    best_at_check: Vec<f32>,
    halved: Vec<bool>,
    queries: u64,
}

impl<'a> Run<'a> {
    fn new(
        x: ArrayView4<'a, f32>,
        targets: &'a [u8],
        cfg: PgdConfig,
        start: Start,
        rng: &mut impl Rng,
    ) -> Self {
        let mut adv = x.to_owned();
        match start {
            Start::Clean => {}
            Start::Random => {
                if cfg.eps > 0.0 {
                    adv.mapv_inplace(|xi| {
                        project(xi, cfg.eps, xi + rng.random_range(-cfg.eps..=cfg.eps))
                    });
                }
            }
            Start::From(w) => Zip::from(&mut adv)
                .and(&w)
                .for_each(|a, &wi| *a = project(*a, cfg.eps, wi)),
        }
        let n = targets.len();
        let eta = match cfg.schedule {
            Schedule::Constant { factor } => factor * cfg.eps / cfg.steps.max(1) as f32,
            Schedule::Apgd => 2.0 * cfg.eps,
        };
        Run {
            x,
            targets,
            cfg,
            prev: adv.clone(),
            best: adv.clone(),
            best_grad: Array4::zeros(adv.raw_dim()),
            adv,
            best_loss: Array1::from_elem(n, f32::NEG_INFINITY),
            won: vec![false; n],
            eta: vec![eta; n],
            last_loss: vec![f32::NEG_INFINITY; n],
            rises: vec![0; n],
            best_at_check: vec![f32::NEG_INFINITY; n],
            halved: vec![false; n],
            queries: 0,
        }
    }

    /// Runs every step; evaluates `steps + 1` iterates (the last only to see if it won).
    fn climb(mut self, net: &Network, ws: &mut Workspace) -> Self {
        let steps = self.cfg.steps;
        let apgd = matches!(self.cfg.schedule, Schedule::Apgd);
        // APGD's checkpoints: the first after 22 % of the steps, then windows shrinking
        // by 3 % of the steps down to 6 %.
        let frac = |f: f32| ((f * steps as f32) as usize).max(1);
        let mut window = frac(0.22);
        let mut next_check = window;
        let pass = Pass::input_gradient(net, self.cfg.grad);
        let mut active: Vec<usize> = (0..self.targets.len()).collect();
        for t in 0..=steps {
            if active.is_empty() {
                break;
            }
            self.queries += active.len() as u64;
            let (scores, g) = active_gradient(
                net,
                ws,
                self.adv.view(),
                &active,
                self.targets,
                &pass,
                self.cfg.loss,
            );
            let check = apgd && t == next_check && t < steps;
            let mut still = Vec::with_capacity(active.len());
            for (j, (&i, score)) in active.iter().zip(scores).enumerate() {
                let Score { loss, fooled: won } = score;
                let gj = g.index_axis(Axis(0), j);
                if t > 0 && loss > self.last_loss[i] {
                    self.rises[i] += 1;
                }
                self.last_loss[i] = loss;
                if loss > self.best_loss[i] || (won && !self.won[i]) {
                    self.best_loss[i] = loss;
                    self.best
                        .index_axis_mut(Axis(0), i)
                        .assign(&self.adv.index_axis(Axis(0), i));
                    self.best_grad.index_axis_mut(Axis(0), i).assign(&gj);
                }
                if won && self.cfg.early_stop {
                    self.won[i] = true;
                    continue;
                }
                if t == steps {
                    continue;
                }
                let mut from_best = false;
                if check {
                    let stalled = (self.rises[i] as f32) < RISE_FRACTION * window as f32
                        || (!self.halved[i] && self.best_at_check[i] >= self.best_loss[i]);
                    self.halved[i] = stalled;
                    self.best_at_check[i] = self.best_loss[i];
                    self.rises[i] = 0;
                    if stalled {
                        self.eta[i] /= 2.0;
                        from_best = true;
                    }
                }
                self.step(i, if from_best { None } else { Some(gj) }, apgd && t > 0);
                still.push(i);
            }
            if check {
                window = window.saturating_sub(frac(0.03)).max(frac(0.06));
                next_check = t + window;
            }
            active = still;
        }
        self
    }

    /// One update of image `i` along gradient `g` (`None`: go back to the best point
    /// and use its gradient), with momentum if asked.
    fn step(&mut self, i: usize, g: Option<ArrayView4Row<'_>>, momentum: bool) {
        let (eps, eta) = (self.cfg.eps, self.eta[i]);
        let alpha = if momentum { MOMENTUM } else { 1.0 };
        let x = self.x.index_axis(Axis(0), i);
        let mut adv = self.adv.index_axis_mut(Axis(0), i);
        let mut prev = self.prev.index_axis_mut(Axis(0), i);
        let g = match g {
            Some(g) => g,
            None => {
                adv.assign(&self.best.index_axis(Axis(0), i));
                prev.assign(&adv);
                self.best_grad.index_axis(Axis(0), i)
            }
        };
        Zip::from(&mut adv)
            .and(&mut prev)
            .and(&x)
            .and(&g)
            .for_each(|a, p, &xi, &gi| {
                let z = project(xi, eps, *a + eta * sign(gi));
                let next = project(xi, eps, *a + alpha * (z - *a) + (1.0 - alpha) * (*a - *p));
                *p = *a;
                *a = next;
            });
    }
}

/// One image's gradient.
type ArrayView4Row<'v> = ndarray::ArrayView3<'v, f32>;
