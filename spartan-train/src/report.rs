//! Charts the CLI writes: loss curves (the paper's Figure 8) and accuracy-vs-ε curves
//! (its Figure 7).

use crate::plot::{write_png, LinePlot, PlotError, Series};
use std::path::Path;

/// Per-batch loss of one or more runs, raw (faint) and smoothed, on a log axis.
pub fn loss_chart(runs: &[(&str, &[f32])], path: &Path) -> Result<(), PlotError> {
    let longest = runs.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
    let series = runs
        .iter()
        .map(|(name, losses)| Series {
            name: name.to_string(),
            points: losses
                .iter()
                .enumerate()
                .map(|(i, &l)| ((i + 1) as f64, f64::from(l)))
                .collect(),
            markers: false,
            smooth: Some((longest / 40).clamp(2, 200)),
        })
        .collect();
    write_png(
        &LinePlot {
            title: "Training loss per batch (cross-entropy + filter regulariser)".into(),
            x_label: "training step (batch)".into(),
            y_label: "loss".into(),
            series,
            y_range: None,
            log_y: true,
        },
        path,
    )
}

/// Accuracy (%) against ε, one line per model.
pub fn accuracy_chart(
    title: &str,
    lines: &[(String, Vec<(f64, f64)>)],
    path: &Path,
) -> Result<(), PlotError> {
    let series = lines
        .iter()
        .map(|(name, pts)| Series {
            name: name.clone(),
            points: pts.iter().map(|&(e, a)| (e, a * 100.0)).collect(),
            markers: true,
            smooth: None,
        })
        .collect();
    write_png(
        &LinePlot {
            title: title.into(),
            x_label: "ε (L∞ perturbation)".into(),
            y_label: "accuracy (%)".into(),
            series,
            y_range: Some((0.0, 100.0)),
            log_y: false,
        },
        path,
    )
}
