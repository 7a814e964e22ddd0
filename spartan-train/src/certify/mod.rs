//! Certified robustness: for each image, a proof that no input within ε changes the
//! class — a lower bound on robust accuracy, to set under the attacks' upper bound.
//!
//! A filtering layer maps each pixel to one of a few codes, and within ε most pixels
//! keep theirs ([`spartan_core::codes`]), so the rest of the network sees a few
//! uncertain pixels with two or three codes each instead of a box. The verifier:
//!
//! 1. builds that domain: per pixel the codes `[x − ε, x + ε] ∩ [0, 1]` reaches, on real
//!    (`f32`) values or on the `u8` grid ([`Grid`]); without a filter, pixel intervals.
//!    Nearby uncertain pixels are clustered into one group of every combination of
//!    their codes, so that what depends on one cluster only is known exactly;
//! 2. bounds the logits by interval bound propagation (the baseline), then by linear
//!    bounds (DeepPoly forward for every neuron, CROWN back-substitution of the logit
//!    margins), concretised exactly per group against its options, tightened by
//!    back-substituting every unstable neuron when a proof is within reach;
//! 3. where a margin stays unproven, tries the input its bound points to, then branches
//!    on the options of the most influential group, within a budget of nodes.
//!
//! A counterexample is an input in the ball that the `f32` reference inference
//! ([`F32Model::infer`]) misclassifies: checked, never inferred from bounds. A proof
//! covers the `f32` network as computed, in any summation order: every pre-activation
//! carries a bound on its rounding (see `docs/certify.md`).

mod backward;
mod domain;
mod forward;
mod net;
mod relax;
mod search;
#[cfg(test)]
mod tests;

pub use domain::{real_ball, u8_ball, Grid};

use crate::data::Dataset;
use crate::observe::Observer;
use net::Net;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use spartan_core::filter::pixel_to_unit;
use spartan_core::float::F32Model;
use std::time::Instant;

/// Why a model or an input cannot be certified.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    /// The model has a layer the verifier does not handle.
    #[error("cannot certify this model: {0}")]
    Unsupported(&'static str),
    /// The model is inconsistent.
    #[error("invalid model: {0}")]
    Model(&'static str),
    /// An image of the wrong size.
    #[error("the image has {got} pixels; the model reads {expected}")]
    ImageSize {
        /// Pixels the model reads.
        expected: usize,
        /// Pixels given.
        got: usize,
    },
    /// A label that is not a class.
    #[error("label {label} is not one of the model's {classes} classes")]
    Label {
        /// The label.
        label: u8,
        /// Number of classes.
        classes: usize,
    },
    /// ε outside `[0, 1]`.
    #[error("ε {0} is not in [0, 1]")]
    Eps(f32),
}

/// What became of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// No input of the ball changes the class (and the clean image is right).
    Proven,
    /// An input of the ball that the network misclassifies (checked by inference).
    Counterexample,
    /// Neither, within the budget.
    Unknown,
}

/// What a proof needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProvenBy {
    /// Interval bound propagation alone.
    Ibp,
    /// Linear bounds, without branching.
    Bounds,
    /// Branching over uncertain pixels' codes.
    Branching,
}

/// A misclassified input of the ball.
#[derive(Clone, Debug, PartialEq)]
pub struct Counterexample {
    /// The network input (HWC, `[0, 1]`); on the `u8` grid every value is `q/255`.
    pub input: Vec<f32>,
    /// The class the `f32` network gives it.
    pub predicted: u8,
    /// Its `f32` logits.
    pub logits: Vec<f32>,
}

/// Settings of a certification.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CertifyConfig {
    /// Which inputs the ball holds.
    pub grid: Grid,
    /// Most bound computations per image (nodes of the branching search).
    pub budget: usize,
    /// Most combined options of a cluster of nearby uncertain pixels, whose
    /// interactions the bounds then keep exactly (1: every pixel on its own).
    pub cluster: usize,
}

impl Default for CertifyConfig {
    fn default() -> Self {
        CertifyConfig {
            grid: Grid::Real,
            budget: DEFAULT_BUDGET,
            cluster: DEFAULT_CLUSTER,
        }
    }
}

/// Default [`CertifyConfig::cluster`].
pub const DEFAULT_CLUSTER: usize = 16;

/// Default [`CertifyConfig::budget`].
pub const DEFAULT_BUDGET: usize = 200;

/// The result for one image at one ε.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageResult {
    /// Proven, counterexample or unknown.
    pub verdict: Verdict,
    /// For a proof: what it needed.
    pub proven_by: Option<ProvenBy>,
    /// Input elements that can take more than one value.
    pub uncertain: usize,
    /// Bound computations spent.
    pub nodes: usize,
    /// Lower bound of the worst logit margin before branching (`> 0`: proven).
    pub root_margin: f64,
    /// The misclassified input, for a counterexample.
    pub counterexample: Option<Counterexample>,
}

/// Lower and upper bounds of each `f32` logit over a ball.
#[derive(Clone, Debug, PartialEq)]
pub struct LogitBounds {
    /// Lower bounds.
    pub lo: Vec<f64>,
    /// Upper bounds.
    pub hi: Vec<f64>,
}

/// A model ready to certify.
pub struct Certifier<'m> {
    model: F32Model<'m>,
    net: Net,
}

impl<'m> Certifier<'m> {
    /// Prepares `model`; fails for layers the verifier cannot bound.
    pub fn new(model: F32Model<'m>) -> Result<Self, CertifyError> {
        let net = Net::from_model(&model)?;
        Ok(Certifier { model, net })
    }

    /// The model.
    pub fn model(&self) -> &F32Model<'m> {
        &self.model
    }

    fn domain(
        &self,
        image: &[u8],
        eps: f32,
        grid: Grid,
        cluster: usize,
    ) -> Result<domain::Domain, CertifyError> {
        let expected = self.model.input_len();
        if image.len() != expected {
            return Err(CertifyError::ImageSize {
                expected,
                got: image.len(),
            });
        }
        if !(0.0..=1.0).contains(&eps) {
            return Err(CertifyError::Eps(eps));
        }
        domain::Domain::ball(&self.net, image, eps, grid, cluster.max(1)).ok_or(
            CertifyError::Unsupported("an input element reaches more than 256 filter codes"),
        )
    }

    /// Certifies that every input within `eps` of `image` (raw pixels) gets `label`.
    pub fn certify(
        &self,
        image: &[u8],
        label: u8,
        eps: f32,
        cfg: &CertifyConfig,
    ) -> Result<ImageResult, CertifyError> {
        let classes = self.model.classes();
        if label as usize >= classes {
            return Err(CertifyError::Label { label, classes });
        }
        let dom = self.domain(image, eps, cfg.grid, cfg.cluster)?;
        let uncertain = dom.uncertain();
        let clean: Vec<f32> = image.iter().map(|&p| pixel_to_unit(p)).collect();
        let mut arena = vec![0.0; self.model.arena_len()];
        let mut logits = vec![0.0; classes];
        // The input length was checked with the domain: inference cannot fail.
        let _ = self.model.infer(&clean, &mut arena, &mut logits);
        let clean_margin = (0..classes)
            .filter(|&j| j != label as usize)
            .map(|j| f64::from(logits[label as usize]) - f64::from(logits[j]))
            .fold(f64::INFINITY, f64::min);
        if let Some(cx) = self.check(&clean, label as usize) {
            return Ok(ImageResult {
                verdict: Verdict::Counterexample,
                proven_by: None,
                uncertain,
                nodes: 0,
                root_margin: f64::NEG_INFINITY,
                counterexample: Some(cx),
            });
        }
        let found = self.search(dom, label as usize, cfg.budget.max(1), clean_margin);
        Ok(ImageResult {
            verdict: found.verdict,
            proven_by: found.proven_by,
            uncertain,
            nodes: found.nodes,
            root_margin: found.root_margin,
            counterexample: found.counterexample,
        })
    }

    /// Bounds on the `f32` logits over the ball (`symbolic = false`: intervals only).
    pub fn logit_bounds(
        &self,
        image: &[u8],
        eps: f32,
        grid: Grid,
        symbolic: bool,
    ) -> Result<LogitBounds, CertifyError> {
        let dom = self.domain(image, eps, grid, DEFAULT_CLUSTER)?;
        let fwd = forward::forward(&self.net, &dom, symbolic);
        let (lo, hi) = fwd.logits();
        let err = &fwd.ops.last().expect("a network has layers").post().err;
        Ok(LogitBounds {
            lo: lo.iter().zip(err).map(|(v, e)| v - e).collect(),
            hi: hi.iter().zip(err).map(|(v, e)| v + e).collect(),
        })
    }

    /// Lower bounds of `z_label − z_j` over the ball for every class `j` (`+∞` for
    /// `j = label`), by back-substitution without branching.
    pub fn margin_bounds(
        &self,
        image: &[u8],
        label: u8,
        eps: f32,
        grid: Grid,
    ) -> Result<Vec<f64>, CertifyError> {
        let dom = self.domain(image, eps, grid, DEFAULT_CLUSTER)?;
        let fwd = forward::forward(&self.net, &dom, true);
        let label = label as usize;
        let others: Vec<usize> = (0..self.model.classes()).filter(|&j| j != label).collect();
        let m = backward::margins(&self.net, &fwd, &dom, label, &others);
        let rounding = backward::noise(&self.net, &fwd, label, &others);
        let (lo, hi) = fwd.logits();
        let mut out = vec![f64::INFINITY; self.model.classes()];
        for ((&j, &lb), n) in m.classes.iter().zip(&m.lower).zip(rounding) {
            out[j] = lb.max(lo[label] - hi[j]) - n;
        }
        Ok(out)
    }

    /// Input elements of `image` that can take more than one value within `eps`.
    pub fn uncertain_elements(
        &self,
        image: &[u8],
        eps: f32,
        grid: Grid,
    ) -> Result<usize, CertifyError> {
        Ok(self.domain(image, eps, grid, 1)?.uncertain())
    }
}

/// One ε on one grid over a set of images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertifyPoint {
    /// Perturbation radius (ℓ∞).
    pub eps: f32,
    /// Real values or the `u8` grid.
    pub grid: Grid,
    /// Images.
    pub n: usize,
    /// Images proven robust (and right).
    pub proven: usize,
    /// Of those, proven by interval bounds alone.
    pub proven_ibp: usize,
    /// Of those, proven without branching (interval or linear bounds).
    pub proven_without_branching: usize,
    /// Images with a checked counterexample (a misclassified clean image counts).
    pub counterexamples: usize,
    /// Images neither proven nor refuted.
    pub unknown: usize,
    /// `proven / n`: a lower bound on robust accuracy.
    pub certified_accuracy: f64,
    /// `(n − counterexamples) / n`: an upper bound on robust accuracy.
    pub upper_bound: f64,
    /// Mean number of uncertain input elements per image.
    pub mean_uncertain: f64,
    /// Wall-clock seconds for the images.
    pub seconds: f64,
}

/// Per-image outcome, as saved in `certify.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Index in the data set the images came from.
    pub index: usize,
    /// Perturbation radius.
    pub eps: f32,
    /// Grid.
    pub grid: Grid,
    /// True class.
    pub label: u8,
    /// Outcome.
    pub verdict: Verdict,
    /// What a proof needed.
    pub proven_by: Option<ProvenBy>,
    /// Uncertain input elements.
    pub uncertain: usize,
    /// Bound computations.
    pub nodes: usize,
    /// Worst margin's lower bound before branching (`null` when infinite).
    pub root_margin: Option<f64>,
    /// Class of the counterexample.
    pub predicted: Option<u8>,
}

/// Everything a certification run reports (`certify.json`, `certify.csv`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertifyReport {
    /// Human description of the settings.
    pub settings: String,
    /// Images.
    pub n: usize,
    /// Index of the first image in its data set.
    pub first_index: usize,
    /// Accuracy of the `f32` network on the clean images.
    pub clean_accuracy: f64,
    /// One point per (grid, ε).
    pub points: Vec<CertifyPoint>,
    /// One record per image, grid and ε.
    pub images: Vec<ImageRecord>,
}

impl CertifyReport {
    /// `grid,epsilon,n,…` rows.
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "grid,epsilon,n,proven,counterexample,unknown,certified_accuracy,upper_bound,proven_ibp,proven_without_branching,mean_uncertain,seconds\n",
        );
        for p in &self.points {
            s += &format!(
                "{},{},{},{},{},{},{:.6},{:.6},{},{},{:.2},{:.2}\n",
                p.grid.name(),
                p.eps,
                p.n,
                p.proven,
                p.counterexamples,
                p.unknown,
                p.certified_accuracy,
                p.upper_bound,
                p.proven_ibp,
                p.proven_without_branching,
                p.mean_uncertain,
                p.seconds
            );
        }
        s
    }

    /// Certified accuracy at `eps` on `grid`, if computed.
    pub fn certified_at(&self, eps: f32, grid: Grid) -> Option<f64> {
        self.points
            .iter()
            .find(|p| p.grid == grid && (p.eps - eps).abs() < 1e-6)
            .map(|p| p.certified_accuracy)
    }
}

/// A counterexample found by [`certify_set`], with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct FoundCounterexample {
    /// Index of the image in its data set.
    pub index: usize,
    /// Perturbation radius.
    pub eps: f32,
    /// Grid.
    pub grid: Grid,
    /// True class.
    pub label: u8,
    /// The input and what the network makes of it.
    pub example: Counterexample,
}

/// Images to certify.
#[derive(Clone, Copy, Debug)]
pub struct ImageSet<'a> {
    /// Raw images with their labels.
    pub images: &'a Dataset,
    /// Index of the first image in its data set (for the records).
    pub first_index: usize,
}

/// Certifies every image of `set` at every ε on every grid, in parallel over images.
pub fn certify_set(
    cert: &Certifier<'_>,
    set: ImageSet<'_>,
    eps: &[f32],
    grids: &[Grid],
    budget: usize,
    cluster: usize,
    observer: &dyn Observer,
) -> Result<(CertifyReport, Vec<FoundCounterexample>), CertifyError> {
    let ImageSet {
        images,
        first_index,
    } = set;
    let (labels, images) = (images.labels.as_slice(), images.values());
    let len = cert.model.input_len();
    let n = labels.len();
    if images.len() != n * len {
        return Err(CertifyError::ImageSize {
            expected: n * len,
            got: images.len(),
        });
    }
    let image = |i: usize| &images[i * len..(i + 1) * len];
    let clean_right = (0..n)
        .into_par_iter()
        .filter(|&i| {
            let x: Vec<f32> = image(i).iter().map(|&p| pixel_to_unit(p)).collect();
            cert.check(&x, labels[i] as usize).is_none()
        })
        .count();
    let mut report = CertifyReport {
        settings: format!(
            "linear bounds (DeepPoly forward, CROWN margins) over clusters of up to {cluster} code combinations, branching within {budget} nodes per image; f32 rounding bounded"
        ),
        n,
        first_index,
        clean_accuracy: clean_right as f64 / n.max(1) as f64,
        points: Vec::new(),
        images: Vec::new(),
    };
    let mut found = Vec::new();
    for &grid in grids {
        for &e in eps {
            let cfg = CertifyConfig {
                grid,
                budget,
                cluster,
            };
            observer.begin(&format!("ε={e} {}", grid.name()), n as u64, 0);
            let started = Instant::now();
            let results =
                run_parallel(n, observer, |i| cert.certify(image(i), labels[i], e, &cfg))?;
            let seconds = started.elapsed().as_secs_f64();
            observer.end();
            let count = |f: &dyn Fn(&ImageResult) -> bool| results.iter().filter(|r| f(r)).count();
            let proven = count(&|r| r.verdict == Verdict::Proven);
            let counterexamples = count(&|r| r.verdict == Verdict::Counterexample);
            report.points.push(CertifyPoint {
                eps: e,
                grid,
                n,
                proven,
                proven_ibp: count(&|r| r.proven_by == Some(ProvenBy::Ibp)),
                proven_without_branching: count(&|r| {
                    matches!(r.proven_by, Some(ProvenBy::Ibp | ProvenBy::Bounds))
                }),
                counterexamples,
                unknown: n - proven - counterexamples,
                certified_accuracy: proven as f64 / n.max(1) as f64,
                upper_bound: (n - counterexamples) as f64 / n.max(1) as f64,
                mean_uncertain: results.iter().map(|r| r.uncertain as f64).sum::<f64>()
                    / n.max(1) as f64,
                seconds,
            });
            for (i, r) in results.into_iter().enumerate() {
                report.images.push(ImageRecord {
                    index: first_index + i,
                    eps: e,
                    grid,
                    label: labels[i],
                    verdict: r.verdict,
                    proven_by: r.proven_by,
                    uncertain: r.uncertain,
                    nodes: r.nodes,
                    root_margin: r.root_margin.is_finite().then_some(r.root_margin),
                    predicted: r.counterexample.as_ref().map(|c| c.predicted),
                });
                if let Some(example) = r.counterexample {
                    found.push(FoundCounterexample {
                        index: first_index + i,
                        eps: e,
                        grid,
                        label: labels[i],
                        example,
                    });
                }
            }
        }
    }
    Ok((report, found))
}

/// `work(i)` for `i < n` on the rayon pool, reporting each finished item to `observer`
/// from the calling thread (observers need not be thread-safe).
fn run_parallel<T: Send, E: Send>(
    n: usize,
    observer: &dyn Observer,
    work: impl Fn(usize) -> Result<T, E> + Sync,
) -> Result<Vec<T>, E> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let work = &work;
    std::thread::scope(|s| {
        let handle = s.spawn(move || {
            (0..n)
                .into_par_iter()
                .map_with(tx, |tx, i| {
                    let r = work(i);
                    // The receiver lives until every item is done.
                    let _ = tx.send(());
                    r
                })
                .collect::<Result<Vec<T>, E>>()
        });
        // Ends when every sender is dropped, i.e. when the work is over.
        for () in rx.iter() {
            observer.advance(1);
        }
        handle
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
