//! The training loop: seeded shuffles, synthetic-gradient backprop, Adam, per-batch
//! loss log, atomic per-epoch checkpoints and resumption after an interruption.

pub mod certified;
mod resume;
mod run_dir;

pub use run_dir::{config_hash, files, read_config, RunDir, RunLock, RunRecord, Start};

use crate::data::{Batch, Pixel, Splits};
use crate::eval::evaluate;
use crate::nn::loss::cross_entropy_row;
use crate::nn::optim::{AdamConfig, AdamState};
use crate::nn::{Gradients, Init, Network, Pass, Workspace};
use crate::observe::Observer;
use certified::Certified;
use ndarray::{ArrayView1, ArrayView4, ArrayViewMut1};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use spartan_core::spec::ArchSpec;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything that defines a training run (saved as `run.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// What `--arch` said (a name or a spec path).
    pub arch_name: String,
    /// The resolved architecture.
    pub spec: ArchSpec,
    /// Passes over the training set.
    pub epochs: usize,
    /// Examples per step.
    pub batch: usize,
    /// Optimiser settings.
    pub adam: AdamConfig,
    /// Seed of every random choice (init, shuffles).
    pub seed: u64,
    /// Description of the data source.
    pub data: String,
    /// Train on the first N training images only.
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// Weight initialisation.
    #[serde(default)]
    pub init: Init,
    /// The last this-many epochs train at a tenth of the learning rate, but never more
    /// than a sixth of the steps ([`ANNEAL_SHARE_DIVISOR`]; 0: constant).
    #[serde(default)]
    pub anneal_epochs: usize,
    /// Certified training at this radius (interval bounds over the ε-ball, see
    /// [`certified`]); `None`: the clean loss alone. Absent from older run files, and
    /// left out of the hash when `None`, so their runs still resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certify_eps: Option<f32>,
    /// Epochs of certified training spent on the clean loss first (0 without it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub certify_warmup: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// Why training could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A run-directory file could not be written or read.
    #[error("{path}: {action}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed ("cannot write").
        action: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// A run-directory file could not be read whole.
    #[error(transparent)]
    Read(#[from] crate::fsutil::ReadError),
    /// Another process is writing the run directory.
    #[error(
        "{dir} is in use by another run ({holder}): wait for it to end, or choose another --out"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// What the lock file says of its holder (`pid N`).
        holder: String,
    },
    /// A fresh run was asked for in a directory that holds files.
    #[error(
        "{dir} already holds files ({found}): give --resume {dir} to continue its run, \
         --overwrite to replace it, or another --out"
    )]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
        /// The files found.
        found: String,
    },
    /// A bad setting.
    #[error("{0}")]
    Config(String),
    /// The run directory holds something unexpected.
    #[error("{path}: {message}")]
    Resume {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The model could not be built.
    #[error(transparent)]
    Core(#[from] spartan_core::Error),
    /// The network cannot carry interval bounds (certified training). Not a source:
    /// the message already says all of it.
    #[error("--certify-eps: {0}")]
    Interval(crate::nn::interval::IntervalError),
    /// The data does not fit the model.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
}

impl From<crate::nn::interval::IntervalError> for TrainError {
    fn from(e: crate::nn::interval::IntervalError) -> Self {
        TrainError::Interval(e)
    }
}

/// Network and optimiser state at an epoch boundary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The run that wrote it ([`RunRecord::run_id`]).
    pub run_id: String,
    /// Hash of the configuration it was trained with ([`config_hash`]).
    pub config_hash: String,
    /// Epochs that configuration planned (a resumed run may extend them).
    pub planned_epochs: usize,
    /// Epochs finished.
    pub epochs_done: usize,
    /// Network parameters, in optimiser order.
    pub params: Vec<Vec<f32>>,
    /// Optimiser state.
    pub adam: AdamState,
    /// Loss of every batch so far.
    pub losses: Vec<f32>,
    /// Test accuracy after each finished epoch.
    pub test_accuracy: Vec<f64>,
    /// Training wall time so far (seconds, excluding evaluation).
    pub seconds: f64,
}

/// What a finished run reports (saved as `summary.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `--arch` as given.
    pub arch: String,
    /// Learned parameters.
    pub parameters: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Learning rate.
    pub lr: f32,
    /// Seed.
    pub seed: u64,
    /// Data source.
    pub data: String,
    /// Training examples.
    pub train_examples: usize,
    /// Test examples.
    pub test_examples: usize,
    /// Clean test accuracy in `[0, 1]`.
    pub test_accuracy: f64,
    /// Test accuracy after each epoch.
    pub test_accuracy_per_epoch: Vec<f64>,
    /// Loss of the last batch.
    pub final_loss: f32,
    /// Mean loss of each epoch's examples.
    #[serde(default)]
    pub loss_per_epoch: Vec<f32>,
    /// Training wall time (seconds, excluding evaluation), over all sessions.
    pub train_seconds: f64,
    /// Training throughput.
    pub samples_per_second: f64,
    /// `spartan` version.
    pub version: String,
    /// Certified training's radius and the share of test images its interval bounds
    /// hold for at the end ([`certified::bounds_hold_share`]); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certified: Option<CertifiedFigure>,
}

/// What certified training reached.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertifiedFigure {
    /// The radius trained for.
    pub eps: f32,
    /// Share of test images whose interval bounds prove their class, in `[0, 1]`.
    pub bounds_hold: f64,
}

/// At most one step in this many trains at the annealed rate: a sixth, as in the
/// default schedule (the last of six epochs). A short run anneals only its last sixth
/// instead of starving: a 1-epoch run trains 5/6 of its steps at the full rate.
pub const ANNEAL_SHARE_DIVISOR: usize = 6;

impl TrainConfig {
    /// Index of the first step (counted over the whole run, from 0) trained at a tenth
    /// of the rate, with `steps_per_epoch` steps per epoch: the last `anneal_epochs`
    /// epochs' steps, but never more than a sixth of all steps
    /// ([`ANNEAL_SHARE_DIVISOR`]). Runs of at least six times `anneal_epochs` epochs
    /// anneal exactly their last `anneal_epochs` epochs.
    pub fn anneal_start(&self, steps_per_epoch: usize) -> usize {
        let total = self.epochs * steps_per_epoch;
        let cap = total / ANNEAL_SHARE_DIVISOR;
        total - (self.anneal_epochs * steps_per_epoch).min(cap)
    }

    /// Optimiser settings for `step` (counted over the whole run, from 0): the base
    /// rate, or a tenth of it from [`anneal_start`](Self::anneal_start) on, which
    /// settles the last steps' noise.
    pub fn adam_for_step(&self, step: usize, steps_per_epoch: usize) -> AdamConfig {
        let mut cfg = self.adam;
        if step >= self.anneal_start(steps_per_epoch) {
            cfg.lr *= 0.1;
        }
        cfg
    }

    /// Checks the numbers make sense before any work starts.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.epochs == 0 {
            return Err(TrainError::Config("--epochs must be at least 1".into()));
        }
        if self.batch == 0 {
            return Err(TrainError::Config("--batch must be at least 1".into()));
        }
        if self.batch > 65_536 {
            return Err(TrainError::Config("--batch must be at most 65536".into()));
        }
        if !(self.adam.lr.is_finite() && self.adam.lr > 0.0 && self.adam.lr < 10.0) {
            return Err(TrainError::Config("--lr must be in (0, 10)".into()));
        }
        if self.anneal_epochs > self.epochs {
            return Err(TrainError::Config(
                "--anneal-epochs cannot exceed --epochs".into(),
            ));
        }
        if let Some(eps) = self.certify_eps {
            if !(eps.is_finite() && eps > 0.0 && eps <= 1.0) {
                return Err(TrainError::Config(format!(
                    "--certify-eps must be in (0, 1] (pixel values are in [0, 1]), not {eps}"
                )));
            }
            crate::nn::interval::IntervalNet::check(&self.spec)?;
            if self.certify_warmup >= self.epochs {
                return Err(TrainError::Config(format!(
                    "--certify-warmup {} leaves no epoch of the {} for certified training",
                    self.certify_warmup, self.epochs
                )));
            }
        } else if self.certify_warmup != 0 {
            return Err(TrainError::Config(
                "--certify-warmup needs --certify-eps".into(),
            ));
        }
        if self.train_limit == Some(0) {
            return Err(TrainError::Config(
                "--train-limit must be at least 1".into(),
            ));
        }
        self.spec.shapes()?;
        Ok(())
    }
}

/// Mean loss per example of an epoch's first `losses.len()` batches of `batch`
/// examples out of `n` (the last batch of an epoch may be smaller).
pub fn mean_loss(losses: &[f32], batch: usize, n: usize) -> f32 {
    let (mut sum, mut count) = (0.0f64, 0usize);
    for (k, &l) in losses.iter().enumerate() {
        let size = batch.min(n.saturating_sub(k * batch));
        sum += f64::from(l) * size as f64;
        count += size;
    }
    (sum / count.max(1) as f64) as f32
}

/// Deterministic order of the training set for one epoch.
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(epoch as u64 + 1)));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// The training objective on a labelled batch: mean cross-entropy plus the layers'
/// regularisers, with all parameter gradients (into `grads`). Returns (cross-entropy,
/// regulariser).
pub fn loss_and_grads(
    net: &Network,
    x: ArrayView4<'_, f32>,
    labels: &[u8],
    ws: &mut Workspace,
    grads: &mut Gradients,
) -> (f32, f32) {
    weighted_loss_and_grads(net, x, labels, 1.0, ws, grads)
}

/// [`loss_and_grads`] with the cross-entropy (not the regulariser) weighted by `weight`.
fn weighted_loss_and_grads(
    net: &Network,
    x: ArrayView4<'_, f32>,
    labels: &[u8],
    weight: f32,
    ws: &mut Workspace,
    grads: &mut Gradients,
) -> (f32, f32) {
    let scale = weight / labels.len().max(1) as f32;
    let upstream = |i: usize, row: ArrayView1<'_, f32>, g: ArrayViewMut1<'_, f32>| {
        cross_entropy_row(row, labels[i] as usize, scale, g) * scale
    };
    let b = net.backward(x, &Pass::training(net), upstream, ws, Some(grads));
    (b.totals.loss as f32, b.totals.regularizer)
}

/// A network with what training it needs besides: optimiser state, a gradient buffer
/// and a workspace.
#[derive(Debug)]
pub struct Trainer {
    /// The network being trained.
    pub net: Network,
    /// Adam's moments.
    pub adam: AdamState,
    grads: Gradients,
    ws: Workspace,
    /// Certified training's state, when the loss is the certified one.
    certified: Option<Certified>,
}

impl Trainer {
    /// Fresh optimiser state for `net`.
    pub fn new(net: Network) -> Self {
        Trainer {
            adam: AdamState::new(net.param_lens()),
            grads: Gradients::zeros(&net),
            ws: Workspace::new(),
            net,
            certified: None,
        }
    }

    /// The same trainer, training on the certified loss of `schedule`, `done` steps
    /// into it.
    pub fn certified(
        mut self,
        schedule: certified::Schedule,
        done: usize,
    ) -> Result<Self, crate::nn::interval::IntervalError> {
        self.certified = Some(Certified::new(&self.net, schedule, done)?);
        Ok(self)
    }

    /// One step on a labelled batch: loss and gradients (with regularisers), an Adam
    /// step, the post-update projections. Returns the loss with its regulariser.
    pub fn step(&mut self, cfg: &AdamConfig, x: ArrayView4<'_, f32>, labels: &[u8]) -> f32 {
        let stage = self.certified.as_ref().map(|c| c.schedule.stage(c.step));
        let kappa = stage.map_or(1.0, |s| s.kappa);
        let (ws, grads) = (&mut self.ws, &mut self.grads);
        let (ce, reg) = weighted_loss_and_grads(&self.net, x, labels, kappa, ws, grads);
        let (mut worst, mut frozen) = (0.0, None);
        if let (Some(c), Some(s)) = (self.certified.as_mut(), stage) {
            if s.eps > 0.0 {
                worst = c.add_grads(&self.net, x, labels, s.eps, 1.0 - s.kappa, grads);
                frozen = self
                    .net
                    .spec()
                    .filter()
                    .map(|_| self.net.layer_params(0).to_vec());
            }
            c.step += 1;
        }
        let params = self.net.params_mut().into_iter().zip(self.grads.tensors());
        self.adam.step(cfg, params);
        if let Some(filter) = frozen {
            // Certified training's filter keeps the codes of the warm-up (certified::Stage).
            self.net.layer_params_mut(0).clone_from_slice(&filter);
        }
        self.net.project();
        ce + worst + reg
    }

    /// One pass over `order` (indices into `data`) in batches of `batch`; `on_step`
    /// receives each batch's loss.
    pub fn epoch(
        &mut self,
        cfg: &AdamConfig,
        data: &Batch<impl Pixel>,
        order: &[usize],
        batch: usize,
        on_step: impl FnMut(f32),
    ) {
        self.epoch_scheduled(|_| *cfg, data, order, batch, on_step);
    }

    /// [`epoch`](Self::epoch) with the optimiser settings of the epoch's `k`-th step
    /// (from 0) given by `schedule(k)`.
    pub fn epoch_scheduled(
        &mut self,
        schedule: impl Fn(usize) -> AdamConfig,
        data: &Batch<impl Pixel>,
        order: &[usize],
        batch: usize,
        mut on_step: impl FnMut(f32),
    ) {
        let (mut buf, mut labels) = (Vec::new(), Vec::new());
        for (k, idx) in order.chunks(batch.max(1)).enumerate() {
            let x = data.gather_input(idx, &mut buf, &mut labels);
            on_step(self.step(&schedule(k), x, &labels));
        }
    }

    /// The network and the workspace (to run other passes in the same buffers).
    pub fn parts(&mut self) -> (&Network, &mut Workspace) {
        (&self.net, &mut self.ws)
    }

    /// The trained network.
    pub fn into_network(self) -> Network {
        self.net
    }
}

/// What an observer learns at the end of each training epoch.
#[derive(Clone, Copy, Debug)]
pub struct EpochDone<'a> {
    /// The run directory (its checkpoint and `loss.csv` are up to date).
    pub run_dir: &'a Path,
    /// `--arch` as given.
    pub arch: &'a str,
    /// Epochs finished (1-based).
    pub epoch: usize,
    /// Epochs in the run.
    pub epochs: usize,
    /// Loss of every batch so far.
    pub losses: &'a [f32],
    /// Mean loss of this epoch's examples.
    pub mean_loss: f32,
    /// Clean test accuracy after this epoch, in `[0, 1]`.
    pub test_accuracy: f64,
}

/// Trains (or resumes) a run in the directory `out`, saving a checkpoint and the loss
/// log after every epoch (so an interrupted run resumes) and the model and summary at
/// the end; returns the summary and the trained network.
pub fn train(
    config: &TrainConfig,
    data: &Splits,
    out: &Path,
    start: Start,
    observer: &dyn Observer,
) -> Result<(Summary, Network), TrainError> {
    config.validate()?;
    let shapes = config.spec.shapes()?;
    data.train.check_shape(shapes[0])?;
    data.train.check_classes(config.spec.classes())?;
    data.test.check_classes(config.spec.classes())?;
    let n = data.train.len();
    let batches_per_epoch = n.div_ceil(config.batch);
    let run = match start {
        Start::Resume => RunDir::open(out),
        Start::Fresh | Start::Overwrite => RunDir::create(out)?,
    };
    let _lock = run.lock()?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut trainer = Trainer::new(Network::init_with(&config.spec, config.init, &mut rng)?);
    let (record, checkpoint) = match start {
        Start::Fresh | Start::Overwrite => {
            if start == Start::Fresh {
                run.ensure_empty()?;
            } else {
                run.clear()?;
            }
            let record = RunRecord::new(config.clone());
            run.save_record(&record)?;
            (record, None)
        }
        Start::Resume => {
            run.remove_temporaries()?;
            let record = run.load_record()?;
            let ck = run.load_checkpoint()?;
            let bad = |message| run.resume_error(files::CHECKPOINT, message);
            if let Some(ck) = &ck {
                resume::check_checkpoint(&record, ck, batches_per_epoch).map_err(bad)?;
            }
            let done = ck.as_ref().map_or(0, |ck| ck.epochs_done);
            let changed = resume::apply(&record, config, done, batches_per_epoch)
                .map_err(|message| run.resume_error(files::CONFIG, message))?;
            let record = match changed {
                Some(extended) => {
                    run.save_record(&extended)?;
                    extended
                }
                None => record,
            };
            (record, ck)
        }
    };
    let mut state = Checkpoint {
        run_id: record.run_id.clone(),
        config_hash: record.config_hash.clone(),
        planned_epochs: config.epochs,
        epochs_done: 0,
        params: Vec::new(),
        adam: trainer.adam.clone(),
        losses: Vec::new(),
        test_accuracy: Vec::new(),
        seconds: 0.0,
    };
    if let Some(ck) = checkpoint {
        let bad = |message| run.resume_error(files::CHECKPOINT, message);
        trainer.net.set_param_values(&ck.params).map_err(bad)?;
        if ck.adam.m.len() != ck.params.len() {
            return Err(bad("optimiser state does not match the parameters".into()));
        }
        if ck.losses.len() != ck.epochs_done * batches_per_epoch {
            return Err(bad(format!(
                "{} batch losses for {} epochs of {batches_per_epoch} batches: the \
                 training data changed since",
                ck.losses.len(),
                ck.epochs_done
            )));
        }
        trainer.adam = ck.adam;
        state.epochs_done = ck.epochs_done;
        state.losses = ck.losses;
        state.test_accuracy = ck.test_accuracy;
        state.seconds = ck.seconds;
    }

    if let Some(eps) = config.certify_eps {
        let schedule = certified::Schedule {
            eps,
            warmup: config.certify_warmup * batches_per_epoch,
            total: config.epochs * batches_per_epoch,
        };
        trainer = trainer.certified(schedule, state.epochs_done * batches_per_epoch)?;
    }
    let total = (config.epochs * batches_per_epoch) as u64;
    observer.begin(
        "train",
        total,
        (state.epochs_done * batches_per_epoch) as u64,
    );
    for epoch in state.epochs_done..config.epochs {
        let started = Instant::now();
        let order = epoch_order(config.seed, epoch, n);
        let first = state.losses.len();
        let first_step = epoch * batches_per_epoch;
        let schedule = |k| config.adam_for_step(first_step + k, batches_per_epoch);
        trainer.epoch_scheduled(schedule, &data.train, &order, config.batch, |loss| {
            state.losses.push(loss);
            observer.advance(1);
            let steps = state.losses.len() - first;
            if steps.is_multiple_of(10) {
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                observer.status(&format!(
                    "epoch {}/{} loss {:.4} {:.0} samples/s",
                    epoch + 1,
                    config.epochs,
                    mean_loss(&state.losses[first..], config.batch, n),
                    (steps * config.batch) as f64 / secs
                ));
            }
        });
        state.seconds += started.elapsed().as_secs_f64();
        let acc = evaluate(&trainer.net, &data.test).accuracy;
        state.test_accuracy.push(acc);
        state.epochs_done = epoch + 1;
        state.params = trainer.net.param_values();
        state.adam = trainer.adam.clone();
        run.save_checkpoint(&state)?;
        run.save_losses(&state.losses, batches_per_epoch)?;
        observer.epoch_done(&EpochDone {
            run_dir: out,
            arch: &config.arch_name,
            epoch: epoch + 1,
            epochs: config.epochs,
            losses: &state.losses,
            mean_loss: mean_loss(&state.losses[first..], config.batch, n),
            test_accuracy: acc,
        });
    }
    observer.end();

    let net = trainer.into_network();
    run.save_model(&net)?;
    let test_accuracy = match state.test_accuracy.last() {
        Some(&a) => a,
        None => evaluate(&net, &data.test).accuracy,
    };
    let summary = Summary {
        arch: config.arch_name.clone(),
        parameters: config.spec.parameter_count()?,
        epochs: config.epochs,
        batch: config.batch,
        lr: config.adam.lr,
        seed: config.seed,
        data: config.data.clone(),
        train_examples: n,
        test_examples: data.test.len(),
        test_accuracy,
        test_accuracy_per_epoch: state.test_accuracy.clone(),
        final_loss: state.losses.last().copied().unwrap_or(f32::NAN),
        loss_per_epoch: state
            .losses
            .chunks(batches_per_epoch.max(1))
            .map(|l| mean_loss(l, config.batch, n))
            .collect(),
        train_seconds: state.seconds,
        samples_per_second: (config.epochs * n) as f64 / state.seconds.max(1e-9),
        version: env!("CARGO_PKG_VERSION").to_string(),
        certified: match config.certify_eps {
            Some(eps) => Some(CertifiedFigure {
                eps,
                bounds_hold: certified::bounds_hold_share(&net, &data.test, eps)?,
            }),
            None => None,
        },
    };
    run.save_summary(&summary)?;
    Ok((summary, net))
}
