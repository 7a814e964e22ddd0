//! How long-running library work (training, attacks) reports as it goes, without
//! drawing or printing anything itself: it calls an [`Observer`]. The `spartan` binary
//! turns the calls into progress bars, log lines and loss charts; tests pass [`Silent`].

use crate::train::EpochDone;

/// Receives progress from long-running library work. Every method does nothing by
/// default, so an observer implements only what it shows.
pub trait Observer {
    /// A task of `total` steps begins, `done` of them already finished (a resumed run).
    fn begin(&self, task: &str, total: u64, done: u64) {
        let _ = (task, total, done);
    }

    /// `steps` more steps of the current task are done.
    fn advance(&self, steps: u64) {
        let _ = steps;
    }

    /// Where the current task stands, in a few words (e.g. the latest loss).
    fn status(&self, message: &str) {
        let _ = message;
    }

    /// The current task is over.
    fn end(&self) {}

    /// A training epoch has finished and its checkpoint is saved.
    fn epoch_done(&self, epoch: &EpochDone<'_>) {
        let _ = epoch;
    }
}

/// An observer that shows nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Observer for Silent {}
