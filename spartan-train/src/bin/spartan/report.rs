//! Files the CLI writes: loss curves (the paper's Figure 8), accuracy-vs-ε curves (its
//! Figure 7) and an attack's results.

use crate::plot::{write_png, LinePlot, PlotError, Series};
use spartan_train::attack::sweep::AttackReport;
use spartan_train::fsutil::write_atomic_str;
use std::path::Path;

/// Writes `attack.csv`, `attack.json` and `attack.png` into `dir`.
pub fn write_attack(report: &AttackReport, dir: &Path, model_name: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_atomic_str(&dir.join("attack.csv"), &report.csv())?;
    write_atomic_str(
        &dir.join("attack.json"),
        &serde_json::to_string_pretty(report).unwrap_or_default(),
    )?;
    let line = (
        format!("{model_name} ({:.1}%)", report.clean_accuracy * 100.0),
        report
            .points
            .iter()
            .map(|p| (f64::from(p.eps), p.accuracy))
            .collect(),
    );
    let title = format!("{} attack: accuracy vs ε (n = {})", report.attack, report.n);
    accuracy_chart(&title, &[line], &dir.join("attack.png")).map_err(std::io::Error::other)
}

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
