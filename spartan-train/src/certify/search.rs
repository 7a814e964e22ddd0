//! One image, in stages of growing cost: interval bounds; linear bounds; linear bounds
//! tightened by back-substituting every unstable neuron; branching over the codes of
//! uncertain pixels. Each stage runs only while the previous one came close enough to
//! a proof to make it worth its price, and every bound that falls short proposes the
//! input it points to, which is checked by inference (a real counterexample ends the
//! search).

use super::backward::{margins, noise, Margins};
use super::domain::Domain;
use super::forward::{forward, forward_with, Forward, SYMBOLIC_VARS};
use super::{Certifier, Counterexample, ProvenBy, Verdict};

/// Tightened bounds are tried when the plain linear bound of the worst margin is at
/// least `−REFINE_REACH ×` the clean margin: back-substitution gains up to about a
/// factor of five over the plain bound on the paper's networks (docs/certify.md).
const REFINE_REACH: f64 = 4.0;

/// Branching is tried when the tightened bound is at least `−BRANCH_REACH ×` the
/// clean margin: one split rarely gains more.
const BRANCH_REACH: f64 = 0.5;

/// What the search found for one image.
pub(crate) struct Found {
    pub verdict: Verdict,
    pub proven_by: Option<ProvenBy>,
    pub counterexample: Option<Counterexample>,
    /// Lower bound of the worst margin before branching.
    pub root_margin: f64,
    /// Bound computations.
    pub nodes: usize,
}

/// Bounds of one domain: per class `j ≠ label` (in `classes` order) the lower bound
/// of the reference margin, and the coefficients of the back-substituted bound.
struct Bound {
    lower: Vec<f64>,
    margins: Margins,
}

impl Certifier<'_> {
    /// Runs the f32 network on `x`; a counterexample if it does not answer `label`.
    pub(crate) fn check(&self, x: &[f32], label: usize) -> Option<Counterexample> {
        let mut arena = vec![0.0; self.model.arena_len()];
        let mut logits = vec![0.0; self.model.classes()];
        let predicted = self.model.infer(x, &mut arena, &mut logits).ok()?;
        (predicted != label).then(|| Counterexample {
            input: x.to_vec(),
            predicted: predicted as u8,
            logits,
        })
    }

    /// Linear bounds of the margins over `dom`, the better of interval and
    /// back-substituted per class.
    fn bound(&self, dom: &Domain, fwd: &Forward, label: usize, classes: &[usize]) -> Bound {
        let m = margins(&self.net, fwd, dom, label, classes);
        let (lo, hi) = fwd.logits();
        let lower = classes
            .iter()
            .zip(&m.lower)
            .map(|(&j, &b)| b.max(lo[label] - hi[j]))
            .collect();
        Bound { lower, margins: m }
    }

    /// Proves, refutes or gives up on `label` over `root` within `budget` nodes;
    /// `clean_margin` (the f32 margin of the clean image) scales the stages' reach.
    pub(crate) fn search(
        &self,
        root: Domain,
        label: usize,
        budget: usize,
        clean_margin: f64,
    ) -> Found {
        let classes: Vec<usize> = (0..self.model.classes()).filter(|&j| j != label).collect();
        let mut found = Found {
            verdict: Verdict::Unknown,
            proven_by: None,
            counterexample: None,
            root_margin: f64::NEG_INFINITY,
            nodes: 1,
        };
        // The rounding bound of each margin: computed on the root domain (so it holds
        // for every branch of it), and only once a proof is in sight.
        let mut rounding: Option<Vec<f64>> = None;
        let holds = |lower: &[f64], r: &[f64]| lower.iter().zip(r).all(|(b, n)| b - n > 0.0);
        let worst_of = |lower: &[f64]| lower.iter().copied().fold(f64::INFINITY, f64::min);
        // Stage 1: intervals.
        let ibp = forward(&self.net, &root, false);
        let (lo, hi) = ibp.logits();
        let lower: Vec<f64> = classes.iter().map(|&j| lo[label] - hi[j]).collect();
        found.root_margin = worst_of(&lower);
        if found.root_margin > 0.0 {
            let r = rounding.insert(noise(&self.net, &ibp, label, &classes));
            if holds(&lower, r) {
                found.verdict = Verdict::Proven;
                found.proven_by = Some(ProvenBy::Ibp);
                return found;
            }
        }
        drop(ibp);
        // Stages 2 and 3: linear bounds, then tightened ones if within reach.
        let reach = clean_margin.max(0.0);
        let symbolic = root.vars <= SYMBOLIC_VARS;
        let mut root_fwd = None;
        for refine in [false, true] {
            if refine {
                if !symbolic || root.groups.is_empty() || found.root_margin < -REFINE_REACH * reach
                {
                    return found;
                }
                found.nodes += 1;
            }
            let fwd = forward_with(&self.net, &root, symbolic, refine);
            let b = self.bound(&root, &fwd, label, &classes);
            found.root_margin = found.root_margin.max(worst_of(&b.lower));
            if worst_of(&b.lower) > 0.0 {
                let r = rounding.get_or_insert_with(|| noise(&self.net, &fwd, label, &classes));
                if holds(&b.lower, r) {
                    found.verdict = Verdict::Proven;
                    found.proven_by = Some(ProvenBy::Bounds);
                    return found;
                }
            }
            if let Some(cx) = self.attack(&root, &b, label) {
                found.verdict = Verdict::Counterexample;
                found.counterexample = Some(cx);
                return found;
            }
            root_fwd = Some((fwd, b));
        }
        let Some((fwd, b)) = root_fwd else {
            return found;
        };
        if root.continuous || found.root_margin < -BRANCH_REACH * reach || found.nodes >= budget {
            return found;
        }
        // Stage 4: branch, depth first, the attack's choice first.
        let rounding = rounding.unwrap_or_else(|| noise(&self.net, &fwd, label, &classes));
        drop(fwd);
        let mut stack = self.children(root, &b);
        while let Some(dom) = stack.pop() {
            if found.nodes >= budget {
                return found;
            }
            found.nodes += 1;
            let fwd = forward_with(&self.net, &dom, true, true);
            let b = self.bound(&dom, &fwd, label, &classes);
            if holds(&b.lower, &rounding) {
                continue;
            }
            if let Some(cx) = self.attack(&dom, &b, label) {
                found.verdict = Verdict::Counterexample;
                found.counterexample = Some(cx);
                return found;
            }
            if dom.groups.is_empty() {
                // A single input the bounds cannot separate from the boundary.
                return found;
            }
            stack.extend(self.children(dom, &b));
        }
        found.verdict = Verdict::Proven;
        found.proven_by = Some(ProvenBy::Branching);
        found
    }

    /// The input the worst margin's bound points to, checked by inference.
    fn attack(&self, dom: &Domain, b: &Bound, label: usize) -> Option<Counterexample> {
        let r = (0..b.lower.len()).min_by(|&x, &y| b.lower[x].total_cmp(&b.lower[y]))?;
        self.check(&dom.argmin_input(&b.margins.coefs[r]), label)
    }

    /// The branches of `dom` on the group that lowers the failing bounds most, in
    /// reverse order of preference (the bound's minimising option pops first).
    fn children(&self, dom: Domain, b: &Bound) -> Vec<Domain> {
        let failing: Vec<usize> = (0..b.lower.len()).filter(|&r| b.lower[r] <= 0.0).collect();
        let drop = |g: usize| {
            failing
                .iter()
                .map(|&r| dom.drop_of(g, &b.margins.coefs[r]))
                .sum::<f64>()
        };
        let Some(g) =
            (0..dom.groups.len()).max_by(|&x, &y| drop(x).total_cmp(&drop(y)).then(y.cmp(&x)))
        else {
            return Vec::new();
        };
        let worst = failing
            .iter()
            .copied()
            .min_by(|&x, &y| b.lower[x].total_cmp(&b.lower[y]))
            .unwrap_or(0);
        let chosen = dom.argmin_option(g, &b.margins.coefs[worst]);
        let n = dom.groups[g].options.len();
        let mut out: Vec<Domain> = (0..n)
            .filter(|&j| j != chosen)
            .map(|j| dom.fix(g, j))
            .collect();
        out.push(dom.fix(g, chosen));
        out
    }
}
