//! The rules of resumption: a checkpoint continues only the run that wrote it, and a
//! resumed run ends exactly where an uninterrupted run of its configuration would. The
//! one setting a resumed run may change is its number of epochs, and only while the
//! steps already done trained the same under the old and the new number.

use super::{config_hash, Checkpoint, RunRecord, TrainConfig};

/// Whether `a` and `b` trained the first `steps` steps with the same learning rates
/// (they differ at most in `epochs`, which moves the start of annealing).
fn same_rates_until(a: &TrainConfig, b: &TrainConfig, steps: usize, per_epoch: usize) -> bool {
    a.anneal_start(per_epoch).min(steps) == b.anneal_start(per_epoch).min(steps)
}

/// Why `to` cannot take over from `from` after `epochs_done` epochs, if it cannot.
fn check_extension(
    from: &TrainConfig,
    to: &TrainConfig,
    epochs_done: usize,
    per_epoch: usize,
) -> Result<(), String> {
    if to.epochs < epochs_done {
        return Err(format!(
            "{epochs_done} epochs are done already; --epochs {} cannot undo them",
            to.epochs
        ));
    }
    if from.certify_eps.is_some() && to.epochs != from.epochs {
        return Err(format!(
            "a certified-training run cannot be extended: its radius grows over the {} \
             epochs it planned, so {} epochs would match no uninterrupted run (start a new \
             run instead)",
            from.epochs, to.epochs
        ));
    }
    if !same_rates_until(from, to, epochs_done * per_epoch, per_epoch) {
        return Err(format!(
            "the {epochs_done} epochs done ran the learning-rate schedule of {} epochs, \
             which anneals at another step than one of {}: the result would match no \
             uninterrupted run (start a new run instead)",
            from.epochs, to.epochs
        ));
    }
    Ok(())
}

/// Checks `ck` was written by the run `record` describes: the same run id and the same
/// configuration, but for an extension of `epochs` recorded after it was saved.
pub(super) fn check_checkpoint(
    record: &RunRecord,
    ck: &Checkpoint,
    per_epoch: usize,
) -> Result<(), String> {
    if ck.run_id != record.run_id {
        return Err(format!(
            "written by run {}, but run.json is run {}: the directory mixes two runs \
             (start afresh with --overwrite)",
            ck.run_id, record.run_id
        ));
    }
    let saved = TrainConfig {
        epochs: ck.planned_epochs,
        ..record.config.clone()
    };
    if config_hash(&saved) != ck.config_hash {
        return Err(format!(
            "trained with configuration {}, but run.json describes {}",
            ck.config_hash, record.config_hash
        ));
    }
    check_extension(&saved, &record.config, ck.epochs_done, per_epoch)
}

/// The record of the run after resuming it as `wanted` asks, `epochs_done` epochs in:
/// `None` when nothing changes, a new record when `epochs` is extended.
pub(super) fn apply(
    record: &RunRecord,
    wanted: &TrainConfig,
    epochs_done: usize,
    per_epoch: usize,
) -> Result<Option<RunRecord>, String> {
    if *wanted == record.config {
        return Ok(None);
    }
    let same_but_epochs = TrainConfig {
        epochs: record.config.epochs,
        ..wanted.clone()
    };
    if same_but_epochs != record.config {
        let differ = differing_fields(&record.config, wanted);
        return Err(format!(
            "the run was started with other settings ({differ} differ): a resumed run \
             keeps its configuration, but for --epochs"
        ));
    }
    check_extension(&record.config, wanted, epochs_done, per_epoch)?;
    Ok(Some(record.with_config(wanted.clone())))
}

/// Names of the settings in which `a` and `b` differ.
fn differing_fields(a: &TrainConfig, b: &TrainConfig) -> String {
    let (a, b) = (serde_json::to_value(a), serde_json::to_value(b));
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (a, b) else {
        return "some settings".into();
    };
    // Both sides' keys: a setting left out when unset is in only one of them.
    let mut names: Vec<&str> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::optim::{AdamConfig, AdamState};
    use spartan_core::spec::{ArchSpec, NamedParams};

    fn config(epochs: usize, anneal_epochs: usize) -> TrainConfig {
        TrainConfig {
            arch_name: "standard".into(),
            spec: ArchSpec::named("standard", NamedParams::default()).unwrap(),
            epochs,
            batch: 10,
            adam: AdamConfig::default(),
            seed: 1,
            data: "embedded".into(),
            train_limit: None,
            init: Default::default(),
            anneal_epochs,
            certify_eps: None,
            certify_warmup: 0,
        }
    }

    fn checkpoint(record: &RunRecord, epochs_done: usize) -> Checkpoint {
        Checkpoint {
            run_id: record.run_id.clone(),
            config_hash: record.config_hash.clone(),
            planned_epochs: record.config.epochs,
            epochs_done,
            params: Vec::new(),
            adam: AdamState::new(vec![]),
            losses: Vec::new(),
            test_accuracy: Vec::new(),
            seconds: 0.0,
        }
    }

    #[test]
    fn checkpoints_continue_only_their_run() {
        let a = RunRecord::new(config(3, 1));
        let b = RunRecord::new(config(3, 1));
        assert_ne!(a.run_id, b.run_id);
        let ck = checkpoint(&a, 1);
        check_checkpoint(&a, &ck, 10).unwrap();
        let e = check_checkpoint(&b, &ck, 10).unwrap_err();
        assert!(e.contains("mixes two runs"), "{e}");
        let seeded = a.with_config(TrainConfig {
            seed: 2,
            ..a.config.clone()
        });
        let e = check_checkpoint(&seeded, &ck, 10).unwrap_err();
        assert!(e.contains("trained with configuration"), "{e}");
    }

    #[test]
    fn epochs_extend_only_while_the_steps_done_trained_alike() {
        // Constant rate: any extension keeps the past.
        let flat = RunRecord::new(config(2, 0));
        let longer = apply(&flat, &config(4, 0), 2, 10).unwrap().unwrap();
        assert_eq!(
            (longer.run_id.as_str(), longer.config.epochs),
            (flat.run_id.as_str(), 4)
        );
        // A checkpoint saved before the extension still belongs to the run after it.
        check_checkpoint(&longer, &checkpoint(&flat, 2), 10).unwrap();
        assert!(apply(&flat, &config(2, 0), 2, 10).unwrap().is_none());
        let e = apply(&flat, &config(1, 0), 2, 10).unwrap_err();
        assert!(e.contains("2 epochs are done"), "{e}");
        // Annealed: 12 epochs anneal their last one; after 6 epochs, 24 still may.
        let annealed = RunRecord::new(config(12, 1));
        apply(&annealed, &config(24, 1), 6, 10).unwrap().unwrap();
        // A finished 6-epoch run annealed its last epoch: a 7-epoch run would not have.
        let six = RunRecord::new(config(6, 1));
        let e = apply(&six, &config(7, 1), 6, 10).unwrap_err();
        assert!(e.contains("learning-rate schedule"), "{e}");
        let e = apply(
            &six,
            &TrainConfig {
                batch: 20,
                ..config(6, 1)
            },
            1,
            10,
        )
        .unwrap_err();
        assert!(e.contains("(batch differ)"), "{e}");
    }

    /// A certified run's radius grows over the epochs it planned: extending it would
    /// train a schedule no uninterrupted run has, so it is refused. Its hash leaves
    /// older runs (no radius) as they were.
    #[test]
    fn certified_runs_do_not_extend() {
        let certified = |epochs| TrainConfig {
            certify_eps: Some(0.1),
            certify_warmup: 1,
            ..config(epochs, 0)
        };
        let run = RunRecord::new(certified(2));
        let e = apply(&run, &certified(4), 2, 10).unwrap_err();
        assert!(e.contains("cannot be extended"), "{e}");
        assert!(apply(&run, &certified(2), 1, 10).unwrap().is_none());
        let clean = config(2, 0);
        assert_ne!(config_hash(&clean), config_hash(&certified(2)));
        let e = apply(&RunRecord::new(clean.clone()), &certified(2), 1, 10).unwrap_err();
        assert!(e.contains("(certify_eps, certify_warmup differ)"), "{e}");
        let json = serde_json::to_string(&clean).unwrap();
        assert!(!json.contains("certify_eps"), "{json}");
    }
}
