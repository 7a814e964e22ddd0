//! Files the CLI writes: loss curves (the paper's Figure 8), accuracy-vs-ε curves (its
//! Figure 7) and an attack's results.

use crate::plot::{write_png, LinePlot, PlotError, Series};
use spartan_core::spec::Shape;
use spartan_train::attack::sweep::AttackReport;
use spartan_train::certify::{CertifyReport, FoundCounterexample, Grid};
use spartan_train::data::idx;
use spartan_train::fsutil::{write_atomic, write_atomic_str};
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

/// Writes `certify.csv`, `certify.json`, `certify.png` and, per grid and ε with any,
/// the counterexamples: `counterexamples/<grid>-eps<ε>.idx` (u8 images for the u8
/// grid, f32 for real values, in `image` order) with an index `….csv` naming each
/// row's test image, label and predicted class.
pub fn write_certify(
    report: &CertifyReport,
    found: &[FoundCounterexample],
    dir: &Path,
    model_name: &str,
    image: Shape,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_atomic_str(&dir.join("certify.csv"), &report.csv())?;
    write_atomic_str(
        &dir.join("certify.json"),
        &serde_json::to_string_pretty(report).unwrap_or_default(),
    )?;
    let mut keys: Vec<(Grid, f32)> = found.iter().map(|f| (f.grid, f.eps)).collect();
    keys.dedup();
    let cx_dir = dir.join("counterexamples");
    for (grid, eps) in keys {
        let rows: Vec<&FoundCounterexample> = found
            .iter()
            .filter(|f| f.grid == grid && f.eps == eps)
            .collect();
        std::fs::create_dir_all(&cx_dir)?;
        let stem = format!("{}-eps{eps}", grid.name());
        let dims = [rows.len(), image.height as usize, image.width as usize];
        let values: Vec<f32> = rows
            .iter()
            .flat_map(|f| f.example.input.iter().copied())
            .collect();
        let bytes = match grid {
            // Every value is q/255 exactly: the raw pixels round-trip.
            Grid::U8 => idx::encode(
                &dims,
                &values
                    .iter()
                    .map(|v| (v * 255.0).round() as u8)
                    .collect::<Vec<u8>>(),
            ),
            Grid::Real => idx::encode_f32(&dims, &values),
        };
        write_atomic(&cx_dir.join(format!("{stem}.idx")), &bytes)?;
        let mut index = String::from("row,test_image,label,predicted,logits\n");
        for (row, f) in rows.iter().enumerate() {
            let logits: Vec<String> = f.example.logits.iter().map(|l| format!("{l}")).collect();
            index += &format!(
                "{row},{},{},{},{}\n",
                f.index,
                f.label,
                f.example.predicted,
                logits.join(" ")
            );
        }
        write_atomic_str(&cx_dir.join(format!("{stem}.csv")), &index)?;
    }
    let mut lines = Vec::new();
    for grid in [Grid::Real, Grid::U8] {
        let pts: Vec<_> = report.points.iter().filter(|p| p.grid == grid).collect();
        if pts.is_empty() {
            continue;
        }
        lines.push((
            format!("{model_name} certified ({})", grid.name()),
            pts.iter()
                .map(|p| (f64::from(p.eps), p.certified_accuracy))
                .collect(),
        ));
        lines.push((
            format!("{model_name} not refuted ({})", grid.name()),
            pts.iter()
                .map(|p| (f64::from(p.eps), p.upper_bound))
                .collect(),
        ));
    }
    let title = format!(
        "Certified accuracy vs ε (n = {}, clean {:.1}%)",
        report.n,
        report.clean_accuracy * 100.0
    );
    accuracy_chart(&title, &lines, &dir.join("certify.png"))
        .map_err(|e| std::io::Error::other(e.to_string()))
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
