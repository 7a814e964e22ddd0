//! `spartan reproduce`: the paper's experiment end to end — train the standard network
//! and the three candidates, attack each (surrogate black-box as in the paper's
//! Figure 7, plus adaptive white-box FGSM and PGD), and write `REPORT.md` with tables
//! and figures. Every finished stage is kept on disk and skipped on a rerun.

use crate::progress::Progress;
use anyhow::Context;
use spartan_core::spec::{ArchSpec, LayerSpec, NamedParams, NAMED_ARCHITECTURES};
use spartan_train::attack::blackbox::{black_box, BlackBoxConfig};
use spartan_train::attack::pgd::PgdConfig;
use spartan_train::attack::sweep::AttackReport;
use spartan_train::attack::white_box::{white_box, Plan, WhiteBoxAttack, WhiteBoxConfig};
use spartan_train::data::Splits;
use spartan_train::fsutil::write_atomic_str;
use spartan_train::nn::optim::AdamConfig;
use spartan_train::nn::{GradMode, Network};
use spartan_train::train::{self, Summary, TrainConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Settings of a reproduction.
#[derive(Clone, Debug)]
pub struct ReproduceConfig {
    /// Output directory.
    pub out: PathBuf,
    /// Training epochs per model.
    pub epochs: usize,
    /// Seed of training and attacks.
    pub seed: u64,
    /// ε sweep.
    pub eps: Vec<f32>,
    /// Test images held by the black-box adversary.
    pub holdout: usize,
    /// Evaluation images for the white-box sweeps.
    pub white_box_images: usize,
    /// PGD iterations.
    pub pgd_steps: usize,
    /// Description of the data source.
    pub data_name: String,
    /// The command line, for the report.
    pub command: String,
}

/// Selects one attack's report from a model's results.
type PickAttack = fn(&ModelResults) -> &AttackReport;

/// One model's results.
struct ModelResults {
    arch: String,
    spec: ArchSpec,
    summary: Summary,
    losses: Vec<f32>,
    blackbox: AttackReport,
    fgsm: AttackReport,
    pgd: AttackReport,
    pgd_identity: AttackReport,
}

impl ModelResults {
    /// The stronger of the two BPDA variants of PGD at `eps`.
    fn worst_pgd(&self, eps: f32) -> Option<f64> {
        match (
            self.pgd.accuracy_at(eps),
            self.pgd_identity.accuracy_at(eps),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Runs (or resumes) the whole reproduction; returns the path of `REPORT.md`.
pub fn reproduce(
    cfg: &ReproduceConfig,
    data: &Splits,
    progress: &Progress,
) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(cfg.epochs >= 1, "--epochs must be at least 1");
    anyhow::ensure!(
        cfg.holdout >= 1 && cfg.holdout < data.test.len(),
        "--holdout must be between 1 and {}",
        data.test.len().saturating_sub(1)
    );
    anyhow::ensure!(
        cfg.white_box_images >= 1,
        "--white-box-images must be at least 1"
    );
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("cannot create {}", cfg.out.display()))?;
    let started = Instant::now();
    let eval_set = data.test.slice(cfg.holdout..data.test.len());
    let holdout = data.test.slice(0..cfg.holdout).to_input();
    let eval = eval_set.to_input();
    let white = eval_set.take(cfg.white_box_images).to_input();
    let stages = NAMED_ARCHITECTURES.len() * 5;
    let mut stage = 0;
    let mut note = |what: &str| {
        stage += 1;
        eprintln!(
            "[{stage}/{stages}] {what} ({:.0} s elapsed)",
            started.elapsed().as_secs_f64()
        );
    };
    // Everything an attack result depends on besides the model (which is kept only
    // when its own settings match).
    let key = format!(
        "eps {:?}; holdout {}; white-box images {}; pgd steps {}; seed {}; data {}",
        cfg.eps, cfg.holdout, cfg.white_box_images, cfg.pgd_steps, cfg.seed, cfg.data_name
    );
    let mut results = Vec::new();
    for arch in NAMED_ARCHITECTURES {
        let spec = ArchSpec::named(arch, NamedParams::default()).context("named architecture")?;
        let run_dir = cfg.out.join("models").join(arch);
        note(&format!("train {arch}"));
        let (summary, mut net) = train_stage(cfg, arch, &spec, data, &run_dir, progress)?;
        let losses = read_losses(&run_dir.join(train::files::LOSS_CSV))?;
        let attacks = cfg.out.join("attacks").join(arch);
        let key = format!(
            "{key}; model {:#010x}",
            spartan_core::format::crc32(&net.to_model_bytes())
        );
        note(&format!("black-box attack on {arch}"));
        let bb_cfg = BlackBoxConfig {
            holdout: cfg.holdout,
            seed: cfg.seed,
            ..BlackBoxConfig::default()
        };
        let blackbox = attack_stage(&attacks.join("blackbox"), arch, &key, || {
            black_box(&mut net, &holdout, &eval, 10, &cfg.eps, &bb_cfg, progress)
        })?;
        let sweep = |attack: WhiteBoxAttack| {
            let wb = WhiteBoxConfig {
                attacks: vec![attack],
                plan: Plan::Each,
                use_labels: true,
                seed: cfg.seed,
            };
            let r = white_box(&net, &white, &cfg.eps, &wb, progress);
            r.attacks.into_iter().next().expect("one attack")
        };
        note(&format!("white-box FGSM on {arch}"));
        let fgsm = attack_stage(&attacks.join("fgsm"), arch, &key, || {
            sweep(WhiteBoxAttack::Fgsm {
                grad: GradMode::Surrogate,
            })
        })?;
        note(&format!("white-box PGD on {arch}"));
        let pgd_cfg = PgdConfig::standard(0.0, cfg.pgd_steps);
        let pgd = attack_stage(&attacks.join("pgd"), arch, &key, || {
            sweep(WhiteBoxAttack::Pgd(pgd_cfg))
        })?;
        note(&format!("white-box PGD (BPDA identity) on {arch}"));
        let pgd_identity = attack_stage(&attacks.join("pgd-identity"), arch, &key, || {
            sweep(WhiteBoxAttack::Pgd(PgdConfig {
                grad: GradMode::Identity,
                ..pgd_cfg
            }))
        })?;
        results.push(ModelResults {
            arch: arch.to_string(),
            spec,
            summary,
            losses,
            blackbox,
            fgsm,
            pgd,
            pgd_identity,
        });
    }
    write_figures(&cfg.out, &results)?;
    let report = render_report(cfg, data, &results, started.elapsed().as_secs_f64());
    let path = cfg.out.join("REPORT.md");
    write_atomic_str(&path, &report).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Trains one model unless a finished run with the same settings is already there.
fn train_stage(
    cfg: &ReproduceConfig,
    arch: &str,
    spec: &ArchSpec,
    data: &Splits,
    run_dir: &Path,
    progress: &Progress,
) -> anyhow::Result<(Summary, Network)> {
    let config = TrainConfig {
        arch_name: arch.to_string(),
        spec: spec.clone(),
        epochs: cfg.epochs,
        batch: 128,
        adam: AdamConfig::default(),
        seed: cfg.seed,
        data: cfg.data_name.clone(),
        train_limit: None,
        init: Default::default(),
        anneal_epochs: 1,
    };
    let same_run = train::read_config(run_dir).ok().as_ref() == Some(&config);
    let summary_path = run_dir.join(train::files::SUMMARY);
    let model_path = run_dir.join(train::files::MODEL);
    if same_run && summary_path.is_file() && model_path.is_file() {
        let summary: Summary = serde_json::from_str(&std::fs::read_to_string(&summary_path)?)
            .with_context(|| format!("{}", summary_path.display()))?;
        let net = Network::load(&std::fs::read(&model_path)?)
            .with_context(|| format!("{}", model_path.display()))?;
        eprintln!(
            "    kept: {} ({:.2}%)",
            run_dir.display(),
            summary.test_accuracy * 100.0
        );
        return Ok((summary, net));
    }
    Ok(train::train(&config, data, run_dir, same_run, progress)?)
}

/// Revision of the attack code's semantics: results computed by another revision are
/// not reused (bump it when an attack changes what it computes).
const ATTACK_REVISION: u32 = 2;

/// Runs an attack unless its result for exactly these settings (`key`) is on disk.
fn attack_stage(
    dir: &Path,
    arch: &str,
    key: &str,
    run: impl FnOnce() -> AttackReport,
) -> anyhow::Result<AttackReport> {
    let json = dir.join("attack.json");
    let key_file = dir.join("stage.key");
    let key = format!("{key}; attack revision {ATTACK_REVISION}");
    if std::fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str()) {
        if let Ok(text) = std::fs::read_to_string(&json) {
            if let Ok(r) = serde_json::from_str::<AttackReport>(&text) {
                eprintln!("    kept: {}", dir.display());
                return Ok(r);
            }
        }
    }
    let r = run();
    crate::report::write_attack(&r, dir, arch)
        .with_context(|| format!("cannot write {}", dir.display()))?;
    // The key goes last: a stage interrupted before it is redone.
    write_atomic_str(&key_file, &key)
        .with_context(|| format!("cannot write {}", key_file.display()))?;
    Ok(r)
}

fn read_losses(path: &Path) -> anyhow::Result<Vec<f32>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| l.rsplit(',').next()?.parse().ok())
        .collect())
}

fn legend(r: &ModelResults) -> String {
    format!("{} ({:.2}%)", r.arch, r.summary.test_accuracy * 100.0)
}

fn write_figures(out: &Path, results: &[ModelResults]) -> anyhow::Result<()> {
    let lines = |pick: PickAttack| -> Vec<(String, Vec<(f64, f64)>)> {
        results
            .iter()
            .map(|r| {
                (
                    legend(r),
                    pick(r)
                        .points
                        .iter()
                        .map(|p| (f64::from(p.eps), p.accuracy))
                        .collect(),
                )
            })
            .collect()
    };
    let n_bb = results.first().map_or(0, |r| r.blackbox.n);
    let n_wb = results.first().map_or(0, |r| r.fgsm.n);
    let charts: [(&str, String, PickAttack); 4] = [
        (
            "figure7-blackbox.png",
            format!("Surrogate black-box FGSM (n = {n_bb})"),
            |r| &r.blackbox,
        ),
        (
            "whitebox-fgsm.png",
            format!("White-box FGSM, BPDA (n = {n_wb})"),
            |r| &r.fgsm,
        ),
        (
            "whitebox-pgd.png",
            format!("White-box PGD, BPDA surrogate (n = {n_wb})"),
            |r| &r.pgd,
        ),
        (
            "whitebox-pgd-identity.png",
            format!("White-box PGD, BPDA identity (n = {n_wb})"),
            |r| &r.pgd_identity,
        ),
    ];
    for (file, title, pick) in charts {
        crate::report::accuracy_chart(&title, &lines(pick), &out.join(file))
            .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    }
    let loss_of = |name: &str| {
        results
            .iter()
            .find(|r| r.arch == name)
            .map(|r| r.losses.as_slice())
            .unwrap_or(&[])
    };
    crate::report::loss_chart(
        &[
            ("standard CNN", loss_of("standard")),
            ("candidate-c (Cos-HSAT filter)", loss_of("candidate-c")),
        ],
        &out.join("figure8-loss.png"),
    )
    .map_err(|e| anyhow::anyhow!("figure8-loss.png: {e}"))?;
    Ok(())
}

fn describe(spec: &ArchSpec) -> String {
    let l1 = match spec.filter() {
        Some(f) => format!("{:?}-Filtering β={} {}", f.kind, f.beta, f.activation),
        None => "none".into(),
    };
    let later: Vec<String> = spec
        .layers
        .iter()
        .filter_map(|l| match l {
            LayerSpec::Conv(c) if c.activation.is_binary() => Some(c.activation.to_string()),
            _ => None,
        })
        .collect();
    if later.is_empty() {
        l1
    } else {
        format!("{l1}; {} on filter layers 2 and 3", later[0])
    }
}

fn table(
    results: &[ModelResults],
    eps: &[f32],
    pick: fn(&ModelResults) -> &AttackReport,
) -> String {
    let mut s = String::from("| ε |");
    for r in results {
        s += &format!(" {} ({:.2}%) |", r.arch, pick(r).clean_accuracy * 100.0);
    }
    s += "\n|---|";
    s += &"---:|".repeat(results.len());
    s.push('\n');
    for &e in eps {
        s += &format!("| {e} |");
        for r in results {
            match pick(r).accuracy_at(e) {
                Some(a) => s += &format!(" {:.2}% |", a * 100.0),
                None => s += " – |",
            }
        }
        s.push('\n');
    }
    s
}

/// Plain-language verdicts: robust to transfer, to the adaptive attack, or neither.
fn verdicts(results: &[ModelResults], probe: f32) -> String {
    let mut s = String::new();
    let base = results.iter().find(|r| r.arch == "standard");
    for r in results {
        let (bb, pgd) = (r.blackbox.accuracy_at(probe), r.worst_pgd(probe));
        let (Some(bb), Some(pgd)) = (bb, pgd) else {
            continue;
        };
        let base_bb = base
            .and_then(|b| b.blackbox.accuracy_at(probe))
            .unwrap_or(bb);
        let transfer = if r.arch == "standard" {
            format!("keeps {:.1}% under the transferred attack", bb * 100.0)
        } else if bb > base_bb + 0.05 {
            format!(
                "**is more robust to transfer** than the standard CNN ({:.1}% vs {:.1}%)",
                bb * 100.0,
                base_bb * 100.0
            )
        } else {
            format!(
                "is **not** more robust to transfer than the standard CNN ({:.1}% vs {:.1}%)",
                bb * 100.0,
                base_bb * 100.0
            )
        };
        let white = if pgd < 0.3 {
            format!(
                "but the adaptive white-box PGD (BPDA) attack **breaks it** ({:.1}%)",
                pgd * 100.0
            )
        } else {
            // Where the adaptive attack does win, if anywhere in the sweep.
            let falls = r
                .pgd
                .points
                .iter()
                .map(|p| p.eps)
                .find(|&e| r.worst_pgd(e).is_some_and(|a| a < 0.3));
            let beyond = match falls {
                Some(e) => format!("; PGD brings it below 30% from ε = {e} on"),
                None => String::new(),
            };
            format!(
                "and holds {:.1}% against the adaptive white-box PGD (BPDA, the stronger of surrogate and identity){beyond}",
                pgd * 100.0
            )
        };
        s += &format!("- At ε = {probe}, **{}** {transfer}, {white}.\n", r.arch);
    }
    s
}

fn render_report(
    cfg: &ReproduceConfig,
    data: &Splits,
    results: &[ModelResults],
    seconds: f64,
) -> String {
    let mut s = String::new();
    s += "# Spartan Networks — reproduction report\n\n";
    s += &format!(
        "Data: {} ({} training, {} test images). Seed {}, {} epochs per model, batch 128, Adam lr 1e-3, sf = 1e-5, σ = 1, β = 4.\n\n",
        data.source,
        data.train.len(),
        data.test.len(),
        cfg.seed,
        cfg.epochs
    );
    s += "## Models\n\n| model | filtering | parameters | clean test accuracy | training time |\n|---|---|---:|---:|---:|\n";
    for r in results {
        s += &format!(
            "| {} | {} | {} | {:.2}% | {:.0} s |\n",
            r.arch,
            describe(&r.spec),
            r.summary.parameters,
            r.summary.test_accuracy * 100.0,
            r.summary.train_seconds
        );
    }
    let bb = results.first().map(|r| &r.blackbox);
    s += &format!(
        "\n## Surrogate black-box attack (the paper's Figure 7)\n\n{}\n\nAccuracy of each model (the oracle) on n = {} evaluation images (test images {}..) perturbed by FGSM on its substitute; clean accuracy in the header.\n\n",
        bb.map_or(String::new(), |b| b.settings.clone()),
        bb.map_or(0, |b| b.n),
        cfg.holdout
    );
    s += &table(results, &cfg.eps, |r| &r.blackbox);
    s += "\n| model | substitute accuracy | substitute/oracle agreement | oracle queries |\n|---|---:|---:|---:|\n";
    for r in results {
        s += &format!(
            "| {} | {:.2}% | {:.2}% | {} |\n",
            r.arch,
            r.blackbox.substitute_accuracy.unwrap_or(f64::NAN) * 100.0,
            r.blackbox.substitute_agreement.unwrap_or(f64::NAN) * 100.0,
            r.blackbox.queries
        );
    }
    s += "\n![Figure 7: black-box accuracy vs ε](figure7-blackbox.png)\n";
    let wb = results.first().map(|r| (&r.fgsm, &r.pgd));
    s += &format!(
        "\n## White-box FGSM (adaptive: gradients through steps by BPDA with their synthetic gradients)\n\n{}; n = {} (the first evaluation images).\n\n",
        wb.map_or(String::new(), |w| w.0.settings.clone()),
        cfg.white_box_images.min(data.test.len() - cfg.holdout)
    );
    s += &table(results, &cfg.eps, |r| &r.fgsm);
    s += "\n![White-box FGSM](whitebox-fgsm.png)\n";
    s += &format!(
        "\n## White-box PGD (adaptive, BPDA)\n\n{}; n = {}.\n\n",
        wb.map_or(String::new(), |w| w.1.settings.clone()),
        cfg.white_box_images.min(data.test.len() - cfg.holdout)
    );
    s += &table(results, &cfg.eps, |r| &r.pgd);
    s += "\n![White-box PGD](whitebox-pgd.png)\n";
    s += "\n### PGD with the step taken as the identity (BPDA identity)\n\nThe same attack, differentiating `H(z)` as `z` and `H(cos z)` as `cos z` instead of using the synthetic gradients: a check that the surrogate does not mask gradients.\n\n";
    s += &table(results, &cfg.eps, |r| &r.pgd_identity);
    s += "\n![White-box PGD, identity BPDA](whitebox-pgd-identity.png)\n";
    s += "\n## Training loss (the paper's Figure 8)\n\nPer-batch loss (cross-entropy plus the filter regulariser) of Candidate C against the standard CNN.\n\n![Figure 8: loss curves](figure8-loss.png)\n";
    s += "\n## What this shows\n\n";
    for probe in [0.1f32, 0.3] {
        if cfg.eps.iter().any(|&e| (e - probe).abs() < 1e-6) {
            s += &verdicts(results, probe);
        }
    }
    s += "\nA model that only resists the transferred (black-box) attack is not robust: an adversary who differentiates through its steps (BPDA, Athalye et al. 2018) is the honest test; the paper reports only the black-box attack. Where a filtered model does hold under PGD, the binary filter quantises each pixel to a few levels, so an ℓ∞ perturbation changes nothing until it reaches the distance between a pixel and a learned threshold: the accuracy then collapses at that ε (see the tables). That is input binarisation's known, limited robustness, not a proof of robustness: these are gradient attacks (20-step PGD, one random start).\n";
    s += &format!(
        "\n## Reproducibility\n\n- spartan {} built with {}\n- command: `{}`\n- seeds: training and attacks `{}`; data shuffling is seeded per epoch; chunked gradient sums make runs bit-identical across thread counts\n- total time of this invocation: {:.0} s (finished stages are reused on a rerun)\n- raw results: `models/<arch>/` (model.spartan, loss.csv, summary.json) and `attacks/<arch>/<attack>/` (attack.csv, attack.json)\n",
        env!("CARGO_PKG_VERSION"),
        env!("SPARTAN_RUSTC_VERSION"),
        cfg.command,
        cfg.seed,
        seconds
    );
    s
}
