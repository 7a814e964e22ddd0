//! Progress bars for long work, silent when asked (tests) or when stderr is no terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Factory of progress bars with one on/off switch.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Draw nothing.
    pub quiet: bool,
}

impl Progress {
    /// A silent factory.
    pub fn quiet() -> Self {
        Progress { quiet: true }
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
}
