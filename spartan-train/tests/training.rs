//! What a user sees of a training run: a short run learns (the annealed end of the
//! schedule never takes the whole run), and each epoch's line reports the epoch's mean
//! loss, which `loss.csv` can confirm.

mod cli_support;

use cli_support::{spartan_ok, write_dataset};

/// One epoch of 2,000 embedded images at batch 32: 83 % with the full rate for five
/// sixths of the steps (measured); a run spent entirely at a tenth of it reaches 43 %.
#[test]
fn a_one_epoch_run_learns() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    spartan_ok(&[
        "--quiet",
        "train",
        "--arch",
        "standard",
        "--epochs",
        "1",
        "--train-limit",
        "2000",
        "--batch",
        "32",
        "--out",
        out.to_str().unwrap(),
    ]);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let acc = summary["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.7, "one epoch reached {acc}");
}

#[test]
fn each_epoch_reports_its_mean_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_dataset(&data);
    let out = tmp.path().join("run");
    let stderr = spartan_ok(&[
        "--quiet",
        "train",
        "--arch",
        "standard",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "3",
        "--batch",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    let csv = std::fs::read_to_string(out.join("loss.csv")).unwrap();
    let rows: Vec<(usize, f64)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    for epoch in 1..=3 {
        let losses: Vec<f64> = rows
            .iter()
            .filter(|(e, _)| *e == epoch)
            .map(|r| r.1)
            .collect();
        assert_eq!(losses.len(), 4, "20 images in batches of 5");
        let mean = losses.iter().sum::<f64>() / 4.0;
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&format!("epoch {epoch}/3: loss ")))
            .unwrap_or_else(|| panic!("no line for epoch {epoch}: {stderr}"));
        let shown: f64 = line["epoch 1/3: loss ".len()..]
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (shown - mean).abs() <= 6e-5,
            "epoch {epoch}: shown {shown}, mean of its batches {mean}, batches {losses:?}"
        );
    }
}
