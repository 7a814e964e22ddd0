//! Progress bars for long work, silent when asked (`--quiet`) or when stderr is no
//! terminal; the library's [`Observer`] calls become one bar per task.

use crate::report::loss_chart;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use spartan_train::observe::Observer;
use spartan_train::train::files::LOSS_PNG;
use spartan_train::train::EpochDone;
use std::cell::RefCell;

/// Factory of progress bars with one on/off switch, and the observer of library work.
#[derive(Debug, Default)]
pub struct Progress {
    /// Draw nothing.
    pub quiet: bool,
    /// The bar of the task the library is running.
    current: RefCell<Option<ProgressBar>>,
}

impl Progress {
    /// A factory that draws unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        Progress {
            quiet,
            current: RefCell::new(None),
        }
    }

    /// A bar of `total` steps labelled `prefix`.
    pub fn bar(&self, total: u64, prefix: &str) -> ProgressBar {
        let bar = ProgressBar::new(total);
        if self.quiet {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(prefix.to_string());
        bar
    }

    /// Prints a line even when the bar is hidden (logs, CI), without tearing a visible one.
    fn println(&self, line: &str) {
        match self.current.borrow().as_ref() {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

impl Observer for Progress {
    fn begin(&self, task: &str, total: u64, done: u64) {
        let bar = self.bar(total, task);
        bar.set_position(done);
        if let Some(old) = self.current.replace(Some(bar)) {
            old.finish_and_clear();
        }
    }

    fn advance(&self, steps: u64) {
        if let Some(bar) = self.current.borrow().as_ref() {
            bar.inc(steps);
        }
    }

    fn status(&self, message: &str) {
        if let Some(bar) = self.current.borrow().as_ref() {
            bar.set_message(message.to_string());
        }
    }

    fn end(&self) {
        if let Some(bar) = self.current.take() {
            bar.finish_and_clear();
        }
    }

    fn epoch_done(&self, e: &EpochDone<'_>) {
        self.println(&format!(
            "epoch {}/{}: loss {:.4}, test accuracy {:.2}%",
            e.epoch,
            e.epochs,
            e.mean_loss,
            e.test_accuracy * 100.0
        ));
        let png = e.run_dir.join(LOSS_PNG);
        if let Err(err) = loss_chart(&[(e.arch, e.losses)], &png) {
            // A chart is a convenience: report it, keep training.
            let err = anyhow::Error::new(err);
            self.println(&format!(
                "warning: could not draw {}: {err:#}",
                png.display()
            ));
        }
    }
}
