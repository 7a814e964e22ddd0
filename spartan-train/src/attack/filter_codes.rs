//! The filter-code attack: an exact attack on a per-element filtering layer.
//!
//! A Conv-Filtering layer on one channel, or an Offset-Filtering layer, turns each
//! input element into a code of β bits, and within the ε-ball an element can only reach
//! a few codes ([`spartan_core::codes`] finds them exactly, for the `f32` arithmetic the
//! network uses, or on the `u8` pixel grid). The attack searches those codes directly:
//! it runs the network from layer 1 on the filter's binary output, scores every
//! reachable code of every element by the first-order change of the loss,
//! `g · (bits(code) − bits(current))`, switches the `k` best elements, and keeps the
//! switch only if the true loss rose (otherwise it halves `k`). Each chosen code is
//! then written back as the value of its segment nearest the clean value. No gradient
//! through a step is needed, and the images it returns give exactly the codes it
//! evaluated: what it reports is what the network does.

use super::gradient::{active_gradient, Loss};
use super::threat::{ball, pixel_ball, Grid};
use crate::nn::{GradMode, Network, Pass, Workspace};
use ndarray::{Array4, ArrayView4, Axis};
use rand::Rng;
use spartan_core::codes::{code_of, element_units, CodeSegments, Unit};
use spartan_core::filter::pixel_to_unit;
use spartan_core::spec::LayerSpec;
use std::collections::HashMap;

/// Loss evaluations per restart by default.
pub const DEFAULT_STEPS: usize = 100;
/// Searches per image by default.
pub const DEFAULT_RESTARTS: usize = 10;

/// Settings of the filter-code attack.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FilterCodesConfig {
    /// Radius (ℓ∞).
    pub eps: f32,
    /// Where adversarial values may lie: any float, or raw pixels.
    pub grid: Grid,
    /// Loss evaluations per restart.
    pub steps: usize,
    /// Searches per image (the first from the clean codes, the others from random
    /// reachable codes); later ones only for images not yet broken.
    pub restarts: usize,
    /// What the search climbs.
    pub loss: Loss,
    /// Rounds per image and restart of probing (evaluating the true loss of the best
    /// single switches) once first-order proposals stop raising the loss: stronger
    /// (about 1 point at ε 0.3 on candidate-c) but several times slower.
    pub probe_rounds: usize,
    /// How steps after the filter (a candidate's later filter layers) are
    /// differentiated for the scores.
    pub grad: GradMode,
}

impl FilterCodesConfig {
    /// The defaults: 100 steps, 10 restarts, margin loss, no probing, surrogate
    /// gradients after the filter.
    pub fn new(eps: f32, grid: Grid) -> Self {
        FilterCodesConfig {
            eps,
            grid,
            steps: DEFAULT_STEPS,
            restarts: DEFAULT_RESTARTS,
            loss: Loss::Margin,
            probe_rounds: 0,
            grad: GradMode::Surrogate,
        }
    }
}

/// A network's layer 1 seen element by element: the units acting on each input element.
#[derive(Clone, Debug)]
pub struct ElementFilter {
    beta: usize,
    /// One unit list per element (Offset-Filtering), or one shared by all (Conv).
    units: Vec<Vec<Unit>>,
}

impl ElementFilter {
    /// The filter of `net`'s first layer, or why the attack does not apply.
    pub fn of(net: &Network) -> Result<Self, String> {
        let Some(LayerSpec::Filter(spec)) = net.spec().layers.first().copied() else {
            return Err("the model has no filtering layer (layer 1): the filter-code attack needs one; use the BPDA attacks (fgsm, pgd)".into());
        };
        let input = net.shapes()[0];
        let channels = usize::from(input.channels);
        let params = net.layer_params(0);
        let slice = |i: usize| params.get(i).and_then(|t| t.as_slice()).unwrap_or(&[]);
        let (weight, bias) = match params.len() {
            1 => (&[][..], slice(0)),
            _ => (slice(0), slice(1)),
        };
        let shared = matches!(spec.kind, spartan_core::filter::FilterKind::Conv);
        let count = if shared { 1 } else { input.len() };
        let units = (0..count)
            .map(|e| element_units(&spec, weight, bias, channels, e).map(|u| u.to_vec()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                format!(
                    "the {:?}-Filtering layer mixes {channels} input channels in each unit, so its codes are not per element: the filter-code attack does not apply; use the BPDA attacks (fgsm, pgd)",
                    spec.kind
                )
            })?;
        Ok(ElementFilter {
            beta: usize::from(spec.beta),
            units,
        })
    }

    /// Bits (units) per element.
    pub fn beta(&self) -> usize {
        self.beta
    }

    /// The units acting on element `e` (an HWC index), in code-bit order.
    pub fn units(&self, e: usize) -> &[Unit] {
        &self.units[if self.units.len() == 1 { 0 } else { e }]
    }

    /// The codes element `e` with clean value `x` can reach within `eps` on `grid`, each
    /// with the value nearest `x` that gives it; the clean code first, with `x` itself
    /// (or, on the grid, the pixel nearest `x`).
    pub fn choices(&self, e: usize, x: f32, eps: f32, grid: Grid) -> Vec<Choice> {
        let units = self.units(e);
        let mut out = vec![Choice {
            code: code_of(units, x),
            value: x,
        }];
        let mut add = |code: u32, value: f32| match out.iter_mut().find(|c| c.code == code) {
            Some(c) if (value - x).abs() < (c.value - x).abs() => c.value = value,
            Some(_) => {}
            None => out.push(Choice { code, value }),
        };
        match grid {
            Grid::Real => {
                let (lo, hi) = ball(x, eps);
                for s in CodeSegments::new(units, lo, hi) {
                    add(s.code, s.nearest(x));
                }
            }
            Grid::U8 => {
                if let Some((a, b)) = pixel_ball(x, eps) {
                    for p in a..=b {
                        let v = pixel_to_unit(p);
                        add(code_of(units, v), v);
                    }
                }
            }
        }
        out
    }
}

/// Single switches whose true loss a stuck search evaluates per probing round.
const PROBES: usize = 16;
/// A search first switches this fraction of an image's free elements at once (then
/// halves the number whenever the loss fails to rise).
const FIRST_SWITCH_DIVISOR: usize = 4;
/// Chance that a random restart starts an element at a random reachable code rather
/// than its clean one.
const RANDOM_START_SHARE: f64 = 0.5;

/// One code an element can take and the value that gives it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    /// The filter's β bits for this element.
    pub code: u32,
    /// The input value that produces it (nearest the clean value).
    pub value: f32,
}

/// An element with more than one reachable code.
#[derive(Clone, Debug)]
struct Free {
    element: usize,
    choices: Vec<Choice>,
}

/// The free elements of each image of a batch (choices of a shared filter are
/// computed once per distinct value).
fn free_elements(
    filter: &ElementFilter,
    x: ArrayView4<'_, f32>,
    eps: f32,
    grid: Grid,
) -> Vec<Vec<Free>> {
    let shared = filter.units.len() == 1;
    let mut cache: HashMap<u32, Vec<Choice>> = HashMap::new();
    x.outer_iter()
        .map(|img| {
            let mut free = Vec::new();
            for (e, &v) in img.iter().enumerate() {
                let choices = if shared {
                    cache
                        .entry(v.to_bits())
                        .or_insert_with(|| filter.choices(e, v, eps, grid))
                        .clone()
                } else {
                    filter.choices(e, v, eps, grid)
                };
                if choices.len() > 1 {
                    free.push(Free {
                        element: e,
                        choices,
                    });
                }
            }
            free
        })
        .collect()
}

/// For each image of `x`, whether at least one element can change its code within
/// `eps` on `grid` (the others' filter output, hence the network's answer, is the same
/// everywhere in their ball).
pub fn movable(filter: &ElementFilter, x: ArrayView4<'_, f32>, eps: f32, grid: Grid) -> Vec<bool> {
    free_elements(filter, x, eps, grid)
        .iter()
        .map(|f| !f.is_empty())
        .collect()
}

/// The filter-code attack on a batch. Returns, per image, the first misclassified image
/// found, or else the one of highest loss; and how many images were evaluated by the
/// network (queries).
pub fn filter_codes(
    net: &Network,
    filter: &ElementFilter,
    ws: &mut Workspace,
    x: ArrayView4<'_, f32>,
    targets: &[u8],
    cfg: FilterCodesConfig,
    rng: &mut impl Rng,
) -> (Array4<f32>, u64) {
    let images = Images {
        x,
        targets,
        warm: &[],
    };
    filter_codes_from(net, filter, ws, images, cfg, rng)
}

/// The images a filter-code search attacks, their target classes, and the images
/// whose codes it starts from before its own searches (each one a batch like `x`).
#[derive(Clone, Copy, Debug)]
pub struct Images<'a> {
    /// The clean images.
    pub x: ArrayView4<'a, f32>,
    /// Their target classes.
    pub targets: &'a [u8],
    /// Warm starts.
    pub warm: &'a [ArrayView4<'a, f32>],
}

/// [`filter_codes`], which first climbs from the codes of each warm start in turn (a
/// code the element's ball on `cfg.grid` cannot reach counts as its clean one, so any
/// image will do), then makes `cfg.restarts` searches as [`filter_codes`] does — none
/// if `cfg.restarts` is 0 and there is a warm start.
pub fn filter_codes_from(
    net: &Network,
    filter: &ElementFilter,
    ws: &mut Workspace,
    images: Images<'_>,
    cfg: FilterCodesConfig,
    rng: &mut impl Rng,
) -> (Array4<f32>, u64) {
    let Images { x, targets, warm } = images;
    let free = free_elements(filter, x, cfg.eps, cfg.grid);
    let clean_bits = net.forward_layers(0..1, x, ws).to_owned();
    let s = net.shapes()[1];
    let dim = (
        x.dim().0,
        s.height as usize,
        s.width as usize,
        s.channels as usize,
    );
    let clean_bits = clean_bits
        .into_shape_with_order(dim)
        .expect("layer 1 output shape");
    let mut search = Search {
        free: &free,
        beta: filter.beta,
        targets,
        cfg,
        bits: clean_bits.clone(),
        clean_bits,
        state: free.iter().map(|f| vec![0u8; f.len()]).collect(),
        best: free.iter().map(|f| vec![0u8; f.len()]).collect(),
        best_loss: vec![f32::NEG_INFINITY; targets.len()],
        won: vec![false; targets.len()],
        queries: 0,
    };
    let restarts = if warm.is_empty() {
        cfg.restarts.max(1)
    } else {
        cfg.restarts
    };
    // A start an image already had is left out (the search from it is the same): a
    // repeated warm start, or the clean codes after a warm start at them.
    let mut warm_starts: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
    for w in warm {
        let mut state: Vec<Option<Vec<u8>>> = warm_state(filter, &free, *w)
            .into_iter()
            .map(Some)
            .collect();
        for (i, s) in state.iter_mut().enumerate() {
            if warm_starts.iter().any(|earlier| earlier[i] == *s) {
                *s = None;
            }
        }
        warm_starts.push(state);
    }
    let clean_done: Vec<bool> = (0..targets.len())
        .map(|i| {
            warm_starts
                .iter()
                .any(|w| w[i].as_ref().is_some_and(|s| s.iter().all(|&c| c == 0)))
        })
        .collect();
    let warm_starts = warm_starts.into_iter().map(Start::Codes);
    let cold_starts = (0..restarts).map(|r| if r == 0 { Start::Clean } else { Start::Random });
    for start in warm_starts.chain(cold_starts) {
        let open: Vec<usize> = (0..targets.len())
            .filter(|&i| !search.won[i] && !free[i].is_empty())
            .filter(|&i| match &start {
                Start::Codes(c) => c[i].is_some(),
                Start::Clean => !clean_done[i],
                Start::Random => true,
            })
            .collect();
        if !open.is_empty() {
            search.climb(net, ws, &open, &start, rng);
        }
    }
    let mut adv = x.to_owned();
    for (i, f) in free.iter().enumerate() {
        let mut img = adv.index_axis_mut(Axis(0), i);
        let flat = img.as_slice_mut().expect("standard layout");
        for (fe, &c) in f.iter().zip(&search.best[i]) {
            flat[fe.element] = fe.choices[c as usize].value;
        }
    }
    (adv, search.queries)
}

/// Per image and free element, the index of the choice with the code element takes in
/// `warm` (0, the clean code, if its ball cannot reach that code).
fn warm_state(
    filter: &ElementFilter,
    free: &[Vec<Free>],
    warm: ArrayView4<'_, f32>,
) -> Vec<Vec<u8>> {
    free.iter()
        .zip(warm.outer_iter())
        .map(|(f, img)| {
            let flat = img.as_slice().expect("standard layout");
            f.iter()
                .map(|fe| {
                    let code = code_of(filter.units(fe.element), flat[fe.element]);
                    fe.choices.iter().position(|c| c.code == code).unwrap_or(0) as u8
                })
                .collect()
        })
        .collect()
}

/// Where a climb starts.
enum Start {
    /// At the clean codes.
    Clean,
    /// Each free element at a random reachable code with probability
    /// [`RANDOM_START_SHARE`], else at its clean one.
    Random,
    /// At these choices (per image and free element; `None`: the image does not climb).
    Codes(Vec<Option<Vec<u8>>>),
}

/// The state of a search over a batch.
struct Search<'a> {
    free: &'a [Vec<Free>],
    beta: usize,
    targets: &'a [u8],
    cfg: FilterCodesConfig,
    clean_bits: Array4<f32>,
    /// The filter output of each image's current state.
    bits: Array4<f32>,
    /// Per image and free element: the index of its current choice.
    state: Vec<Vec<u8>>,
    /// The first misclassified or highest-loss state found, and its loss.
    best: Vec<Vec<u8>>,
    best_loss: Vec<f32>,
    won: Vec<bool>,
    queries: u64,
}

impl Search<'_> {
    /// Writes image `i`'s choice `c` for free element `f` into its filter output.
    fn set(&mut self, i: usize, f: usize, c: u8) {
        self.state[i][f] = c;
        let fe = &self.free[i][f];
        let code = fe.choices[c as usize].code;
        let mut img = self.bits.index_axis_mut(Axis(0), i);
        let flat = img.as_slice_mut().expect("standard layout");
        for (k, b) in flat[fe.element * self.beta..][..self.beta]
            .iter_mut()
            .enumerate()
        {
            *b = ((code >> k) & 1) as f32;
        }
    }

    /// Puts image `i` in state `choices`.
    fn load(&mut self, i: usize, choices: &[u8]) {
        self.bits
            .index_axis_mut(Axis(0), i)
            .assign(&self.clean_bits.index_axis(Axis(0), i));
        for (f, &c) in choices.iter().enumerate() {
            if c != 0 {
                self.set(i, f, c);
            }
        }
        self.state[i].copy_from_slice(choices);
    }

    /// One search from the clean codes or from random ones, over images `open`.
    fn climb(
        &mut self,
        net: &Network,
        ws: &mut Workspace,
        open: &[usize],
        start: &Start,
        rng: &mut impl Rng,
    ) {
        let n = self.targets.len();
        // Per image: the accepted state, its loss and gradient, and the switch budget.
        let mut accepted: Vec<Vec<u8>> = vec![Vec::new(); n];
        let mut acc_loss = vec![f32::NEG_INFINITY; n];
        let mut acc_grad: Vec<Vec<f32>> = vec![Vec::new(); n];
        let mut budget = vec![0usize; n];
        for &i in open {
            let start: Vec<u8> = match start {
                Start::Codes(codes) => codes[i].clone().unwrap_or_default(),
                _ => self.free[i]
                    .iter()
                    .map(|fc| {
                        if matches!(start, Start::Random) && rng.random_bool(RANDOM_START_SHARE) {
                            rng.random_range(0..fc.choices.len()) as u8
                        } else {
                            0
                        }
                    })
                    .collect(),
            };
            self.load(i, &start);
            budget[i] = self.free[i].len().div_ceil(FIRST_SWITCH_DIVISOR);
        }
        let pass = Pass::input_gradient(net, self.cfg.grad).from_layer(1);
        let mut active = open.to_vec();
        let mut stuck = Vec::new();
        let mut probes = vec![0usize; n];
        for _ in 0..self.cfg.steps {
            if active.is_empty() {
                break;
            }
            self.queries += active.len() as u64;
            let (scores, g) = active_gradient(
                net,
                ws,
                self.bits.view(),
                &active,
                self.targets,
                &pass,
                self.cfg.loss,
            );
            let mut still = Vec::with_capacity(active.len());
            for (j, (&i, score)) in active.iter().zip(scores).enumerate() {
                let loss = score.loss;
                if score.fooled {
                    self.won[i] = true;
                    self.best[i].clone_from(&self.state[i]);
                    continue;
                }
                if loss > self.best_loss[i] {
                    self.best_loss[i] = loss;
                    self.best[i].clone_from(&self.state[i]);
                }
                if loss > acc_loss[i] {
                    acc_loss[i] = loss;
                    accepted[i].clone_from(&self.state[i]);
                    acc_grad[i].clear();
                    acc_grad[i].extend(g.index_axis(Axis(0), j).iter());
                } else {
                    budget[i] /= 2;
                    let back = std::mem::take(&mut accepted[i]);
                    self.load(i, &back);
                    accepted[i] = back;
                }
                if budget[i] > 0 && self.propose(i, &acc_grad[i], budget[i]) {
                    still.push(i);
                } else {
                    stuck.push(i);
                }
            }
            // Where first-order proposals no longer help: the true loss of the best
            // single switches decides.
            stuck.retain(|&i| {
                probes[i] += 1;
                probes[i] <= self.cfg.probe_rounds
            });
            for i in self.probe(net, ws, &stuck, &acc_grad, &acc_loss) {
                budget[i] = 1;
                still.push(i);
            }
            stuck.clear();
            active = still;
        }
    }

    /// Every alternative code of every free element of image `i` with its first-order
    /// gain `g · (bits(code) − bits(current))`.
    fn gains(&self, i: usize, g: &[f32]) -> Vec<(f32, usize, u8)> {
        let beta = self.beta;
        let mut gains = Vec::new();
        for (f, fe) in self.free[i].iter().enumerate() {
            let here = &g[fe.element * beta..][..beta];
            let score = |code: u32| -> f32 {
                here.iter()
                    .enumerate()
                    .map(|(b, &gb)| if (code >> b) & 1 == 1 { gb } else { 0.0 })
                    .sum()
            };
            let cur = self.state[i][f] as usize;
            let base = score(fe.choices[cur].code);
            for (c, ch) in fe.choices.iter().enumerate() {
                if c != cur {
                    gains.push((score(ch.code) - base, f, c as u8));
                }
            }
        }
        gains
    }

    /// For each image of `stuck` (in its accepted state, with gradient `grad[i]` and
    /// loss `loss[i]`), evaluates the true loss of its [`PROBES`] single switches of
    /// highest first-order gain and moves to the best if it raises the loss (or wins).
    /// Returns the images that moved and are still to climb.
    fn probe(
        &mut self,
        net: &Network,
        ws: &mut Workspace,
        stuck: &[usize],
        grad: &[Vec<f32>],
        loss: &[f32],
    ) -> Vec<usize> {
        let mut candidates: Vec<(usize, usize, u8)> = Vec::new();
        for &i in stuck {
            let mut g = self.gains(i, &grad[i]);
            let m = g.len().min(PROBES);
            if m == 0 {
                continue;
            }
            g.select_nth_unstable_by(m - 1, |a, b| b.0.total_cmp(&a.0));
            candidates.extend(g[..m].iter().map(|&(_, f, c)| (i, f, c)));
        }
        if candidates.is_empty() {
            return Vec::new();
        }
        let images: Vec<usize> = candidates.iter().map(|c| c.0).collect();
        let mut batch = self.bits.select(Axis(0), &images);
        for (mut img, &(i, f, c)) in batch.outer_iter_mut().zip(&candidates) {
            let fe = &self.free[i][f];
            let code = fe.choices[c as usize].code;
            let flat = img.as_slice_mut().expect("standard layout");
            for (k, b) in flat[fe.element * self.beta..][..self.beta]
                .iter_mut()
                .enumerate()
            {
                *b = ((code >> k) & 1) as f32;
            }
        }
        self.queries += candidates.len() as u64;
        let logits = net.forward_layers(1..net.layers().len(), batch.view(), ws);
        let scores = self
            .cfg
            .loss
            .scores(logits, images.iter().map(|&i| self.targets[i]));
        // Per stuck image: the best candidate (its loss, whether it wins, which).
        let mut best: HashMap<usize, (f32, bool, usize, u8)> = HashMap::new();
        for (s, &(i, f, c)) in scores.iter().zip(&candidates) {
            let (l, won) = (s.loss, s.fooled);
            let e = best.entry(i).or_insert((f32::NEG_INFINITY, false, f, c));
            if (won && !e.1) || (won == e.1 && l > e.0) {
                *e = (l, won, f, c);
            }
        }
        let mut moved = Vec::new();
        for &i in stuck {
            let Some(&(l, won, f, c)) = best.get(&i) else {
                continue;
            };
            if won || l > loss[i] {
                self.set(i, f, c);
                if won {
                    self.won[i] = true;
                    self.best[i].clone_from(&self.state[i]);
                } else {
                    moved.push(i);
                }
            }
        }
        moved
    }

    /// Switches the `k` free elements of image `i` whose best alternative code raises
    /// the first-order loss `g · Δbits` most; false when none raises it.
    fn propose(&mut self, i: usize, g: &[f32], k: usize) -> bool {
        let mut gains: Vec<(f32, usize, u8)> = Vec::new();
        for (gain, f, c) in self.gains(i, g) {
            match gains.last_mut() {
                Some(last) if last.1 == f => {
                    if gain > last.0 {
                        *last = (gain, f, c);
                    }
                }
                _ => gains.push((gain, f, c)),
            }
        }
        gains.retain(|g| g.0 > 0.0);
        if gains.is_empty() {
            return false;
        }
        let k = k.min(gains.len());
        gains.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        for &(_, f, c) in &gains[..k] {
            self.set(i, f, c);
        }
        true
    }
}
