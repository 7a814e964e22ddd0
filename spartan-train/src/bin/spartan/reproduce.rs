//! `spartan reproduce`: the paper's experiment end to end — train the standard network
//! and the three candidates, attack each (surrogate black-box as in the paper's
//! Figure 7, plus every white-box attack: FGSM, PGD with both BPDA modes, the
//! filter-code search, and their per-image worst case), and write `REPORT.md` with
//! tables and figures. Every finished stage is kept on disk and skipped on a rerun.

use crate::progress::Progress;
use anyhow::Context;
use spartan_core::spec::{ArchSpec, LayerSpec, NamedParams, NAMED_ARCHITECTURES};
use spartan_train::attack::blackbox::{black_box, BlackBoxConfig};
use spartan_train::attack::sweep::AttackReport;
use spartan_train::attack::white_box::{
    white_box, Order, Plan, WarmStart, WhiteBoxAttack, WhiteBoxConfig,
};
use spartan_train::certify::{
    certify_set, Certifier, CertifyReport, Grid, ImageSet, DEFAULT_BUDGET, DEFAULT_CLUSTER,
};
use spartan_train::data::Splits;
use spartan_train::fsutil::write_atomic_str;
use spartan_train::nn::optim::AdamConfig;
use spartan_train::nn::Network;
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
    /// ε sweep of the white-box attacks (they cost far more per point than the
    /// black-box one).
    pub white_box_eps: Vec<f32>,
    /// The white-box attacks (each gets its own table; the headline is their per-image
    /// worst case).
    pub white_box_attacks: Vec<WhiteBoxAttack>,
    /// Whether (and how) the white-box sweeps carry each image's best point from one ε
    /// to the next.
    pub white_box_warm_start: Option<WarmStart>,
    /// The order the white-box sweeps visit their ε values in.
    pub white_box_order: Order,
    /// ε values to certify on the white-box images (empty: no certification).
    pub certify_eps: Vec<f32>,
    /// Description of the data source.
    pub data_name: String,
    /// The command line, for the report.
    pub command: String,
}

/// Selects one attack's report from a model's results (`None`: it does not apply).
type PickAttack<'a> = &'a dyn Fn(&ModelResults) -> Option<&AttackReport>;
/// An owned [`PickAttack`].
type Picker = Box<dyn Fn(&ModelResults) -> Option<&AttackReport>>;

/// One model's results.
struct ModelResults {
    arch: String,
    spec: ArchSpec,
    summary: Summary,
    losses: Vec<f32>,
    blackbox: AttackReport,
    /// One report per white-box attack that applies to the model, in the order of
    /// [`ReproduceConfig::white_box_attacks`].
    white: Vec<AttackReport>,
    /// Per image, robust only if it survived every white-box attack.
    worst: AttackReport,
    /// Proven robust accuracy on the white-box images, if asked for.
    certify: Option<CertifyReport>,
}

impl ModelResults {
    /// The white-box attack called `name`, if it applied to this model.
    fn white_box(&self, name: &str) -> Option<&AttackReport> {
        self.white.iter().find(|r| r.attack == name)
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
    let stages = NAMED_ARCHITECTURES.len() * (3 + usize::from(!cfg.certify_eps.is_empty()));
    let mut clock = StageClock::new(stages);
    let eval_set = data.test.slice(cfg.holdout..data.test.len());
    let holdout = data.test.slice(0..cfg.holdout).to_input();
    let eval = eval_set.to_input();
    let white_set = eval_set.take(cfg.white_box_images);
    let white = white_set.to_input();
    // Everything an attack result depends on besides the model (which is kept only
    // when its own settings match).
    let key = format!(
        "eps {:?}; holdout {}; seed {}; data {}",
        cfg.eps, cfg.holdout, cfg.seed, cfg.data_name
    );
    let white_key: Vec<String> = cfg.white_box_attacks.iter().map(|a| a.describe()).collect();
    let white_key = format!(
        "white-box images {}; white-box eps {:?}; white-box attacks: {}{}{}",
        cfg.white_box_images,
        cfg.white_box_eps,
        white_key.join(" | "),
        // Only when on, so that results from before warm starts existed stay valid.
        cfg.white_box_warm_start
            .map_or(String::new(), |w| format!("; warm start {w:?}")),
        match cfg.white_box_order {
            Order::Ascending => String::new(),
            Order::Descending { settle_after } =>
                format!("; ε descending, settled after {settle_after}"),
        }
    );
    let mut results = Vec::new();
    for arch in NAMED_ARCHITECTURES {
        let spec = ArchSpec::named(arch, NamedParams::default()).context("named architecture")?;
        let run_dir = cfg.out.join("models").join(arch);
        let (summary, mut net) = clock.time(format!("train {arch}"), || {
            train_stage(cfg, arch, &spec, data, &run_dir, progress)
        })?;
        let losses = read_losses(&run_dir.join(train::files::LOSS_CSV))?;
        let attacks = cfg.out.join("attacks").join(arch);
        let key = format!(
            "{key}; model {:#010x}",
            spartan_core::format::crc32(&net.to_model_bytes())
        );
        let bb_cfg = BlackBoxConfig {
            holdout: cfg.holdout,
            seed: cfg.seed,
            ..BlackBoxConfig::default()
        };
        let blackbox = clock
            .time(format!("black-box attack on {arch}"), || {
                attack_stage(&attacks.join("blackbox"), arch, &key, || {
                    let r = black_box(&mut net, &holdout, &eval, 10, &cfg.eps, &bb_cfg, progress);
                    vec![r]
                })
            })?
            .remove(0);
        let wb = WhiteBoxConfig {
            attacks: cfg.white_box_attacks.clone(),
            plan: Plan::Each,
            use_labels: true,
            seed: cfg.seed,
            warm_start: cfg.white_box_warm_start,
            order: cfg.white_box_order,
        };
        let white_stage = format!("white-box attacks and their worst case on {arch}");
        let mut white_reports = clock.time(white_stage, || {
            attack_stage(
                &attacks.join("white-box"),
                arch,
                &format!("{key}; {white_key}"),
                || {
                    let r = white_box(&net, &white, &cfg.white_box_eps, &wb, progress);
                    for n in &r.notes {
                        eprintln!("    note: {n}");
                    }
                    let mut all = r.attacks;
                    all.push(r.worst_case);
                    all
                },
            )
        })?;
        let worst = white_reports.pop().context("the worst case")?;
        let certify = if cfg.certify_eps.is_empty() {
            None
        } else {
            let bytes = net.to_model_bytes();
            Some(clock.time(format!("certify {arch}"), || {
                certify_stage(
                    &attacks.join("certify"),
                    arch,
                    &format!("{key}; certify ε {:?}", cfg.certify_eps),
                    &bytes,
                    &white_set,
                    cfg,
                    progress,
                )
            })?)
        };
        results.push(ModelResults {
            arch: arch.to_string(),
            spec,
            summary,
            losses,
            blackbox,
            white: white_reports,
            worst,
            certify,
        });
    }
    write_figures(&cfg.out, &results, &cfg.white_box_attacks)?;
    let report = render_report(cfg, data, &results, &clock);
    let path = cfg.out.join("REPORT.md");
    write_atomic_str(&path, &report).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Announces each stage and keeps its wall time, for the report's time table (what to
/// speed up next: issue 14 found the attacks, not training, dominating).
struct StageClock {
    started: Instant,
    total: usize,
    /// Each finished stage and its seconds (near zero when its result was reused).
    done: Vec<(String, f64)>,
}

impl StageClock {
    fn new(total: usize) -> Self {
        StageClock {
            started: Instant::now(),
            total,
            done: Vec::new(),
        }
    }

    fn time<T>(&mut self, what: String, run: impl FnOnce() -> T) -> T {
        eprintln!(
            "[{}/{}] {what} ({:.0} s elapsed)",
            self.done.len() + 1,
            self.total,
            self.started.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let out = run();
        self.done.push((what, t.elapsed().as_secs_f64()));
        out
    }

    /// The stages as a Markdown table, with each one's share of the total.
    fn table(&self) -> String {
        let total = self.started.elapsed().as_secs_f64().max(1e-9);
        let mut s = String::from("| stage | seconds | share |\n|---|---:|---:|\n");
        for (what, secs) in &self.done {
            s += &format!("| {what} | {secs:.1} | {:.1}% |\n", secs / total * 100.0);
        }
        s += &format!("| **total** | {total:.1} | 100% |\n");
        s
    }
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
        certify_eps: None,
        certify_warmup: 0,
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
    let start = if same_run {
        train::Start::Resume
    } else {
        train::Start::Overwrite
    };
    Ok(train::train(&config, data, run_dir, start, progress)?)
}

/// Revision of the attack code's semantics: results computed by another revision are
/// not reused (bump it when an attack changes what it computes).
const ATTACK_REVISION: u32 = 3;

/// Runs an attack stage unless its results for exactly these settings (`key`) are on
/// disk: `attacks.json` in `dir` holds every report of the stage, and each report is
/// also written (csv, json, chart) to `dir/<attack>/`.
fn attack_stage(
    dir: &Path,
    arch: &str,
    key: &str,
    run: impl FnOnce() -> Vec<AttackReport>,
) -> anyhow::Result<Vec<AttackReport>> {
    let json = dir.join("attacks.json");
    let key_file = dir.join("stage.key");
    let key = format!("{key}; attack revision {ATTACK_REVISION}");
    if std::fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str()) {
        if let Ok(text) = std::fs::read_to_string(&json) {
            if let Ok(r) = serde_json::from_str::<Vec<AttackReport>>(&text) {
                eprintln!("    kept: {}", dir.display());
                return Ok(r);
            }
        }
    }
    let reports = run();
    for r in &reports {
        let sub = dir.join(&r.attack);
        crate::report::write_attack(r, &sub, arch)
            .with_context(|| format!("cannot write {}", sub.display()))?;
    }
    let text = serde_json::to_string_pretty(&reports).context("attack results as JSON")?;
    write_atomic_str(&json, &text).with_context(|| format!("cannot write {}", json.display()))?;
    // The key goes last: a stage interrupted before it is redone.
    write_atomic_str(&key_file, &key)
        .with_context(|| format!("cannot write {}", key_file.display()))?;
    Ok(reports)
}

/// Revision of the certifier's semantics (as [`ATTACK_REVISION`] for attacks).
const CERTIFY_REVISION: u32 = 1;

/// Certifies the white-box images unless the result for these settings is on disk.
fn certify_stage(
    dir: &Path,
    arch: &str,
    key: &str,
    model: &[u8],
    images: &spartan_train::data::Dataset,
    cfg: &ReproduceConfig,
    progress: &Progress,
) -> anyhow::Result<CertifyReport> {
    let json = dir.join("certify.json");
    let key_file = dir.join("stage.key");
    let key = format!("{key}; certify revision {CERTIFY_REVISION}");
    if std::fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str()) {
        if let Ok(r) = serde_json::from_str::<CertifyReport>(&std::fs::read_to_string(&json)?) {
            eprintln!("    kept: {}", dir.display());
            return Ok(r);
        }
    }
    let f32m = spartan_core::float::F32Model::load(model)?;
    let shape = f32m.shapes()[0];
    let cert = Certifier::new(f32m)?;
    let set = ImageSet {
        images,
        first_index: cfg.holdout,
    };
    let (report, found) = certify_set(
        &cert,
        set,
        &cfg.certify_eps,
        &[Grid::Real],
        DEFAULT_BUDGET,
        DEFAULT_CLUSTER,
        progress,
    )?;
    crate::report::write_certify(&report, &found, dir, arch, shape)
        .with_context(|| format!("cannot write {}", dir.display()))?;
    write_atomic_str(&key_file, &key)
        .with_context(|| format!("cannot write {}", key_file.display()))?;
    Ok(report)
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

fn write_figures(
    out: &Path,
    results: &[ModelResults],
    attacks: &[WhiteBoxAttack],
) -> anyhow::Result<()> {
    let lines = |pick: PickAttack| -> Vec<(String, Vec<(f64, f64)>)> {
        results
            .iter()
            .filter_map(|r| {
                let points = pick(r)?
                    .points
                    .iter()
                    .map(|p| (f64::from(p.eps), p.accuracy))
                    .collect();
                Some((legend(r), points))
            })
            .collect()
    };
    let n_bb = results.first().map_or(0, |r| r.blackbox.n);
    let n_wb = results.first().map_or(0, |r| r.worst.n);
    let mut charts: Vec<(String, String, Picker)> = vec![
        (
            "figure7-blackbox.png".into(),
            format!("Surrogate black-box FGSM (n = {n_bb})"),
            Box::new(|r| Some(&r.blackbox)),
        ),
        (
            "whitebox-worst-case.png".into(),
            format!("White-box, per-image worst case of every attack (n = {n_wb})"),
            Box::new(|r| Some(&r.worst)),
        ),
    ];
    for a in attacks {
        let name = a.name();
        charts.push((
            format!("whitebox-{name}.png"),
            format!("White-box {name} (n = {n_wb})"),
            Box::new(move |r| r.white_box(&name)),
        ));
    }
    for (file, title, pick) in &charts {
        crate::report::accuracy_chart(title, &lines(pick.as_ref()), &out.join(file))
            .with_context(|| file.to_string())?;
    }
    let bands: Vec<(String, Vec<(f64, f64)>)> = results
        .iter()
        .filter_map(|r| Some((r, r.certify.as_ref()?)))
        .flat_map(|(r, c)| {
            let pts: Vec<&spartan_train::certify::CertifyPoint> =
                c.points.iter().filter(|p| p.grid == Grid::Real).collect();
            [
                (
                    format!("{} certified", r.arch),
                    pts.iter()
                        .map(|p| (f64::from(p.eps), p.certified_accuracy))
                        .collect(),
                ),
                (
                    format!("{} worst attack", r.arch),
                    pts.iter()
                        .filter_map(|p| Some((f64::from(p.eps), r.worst.accuracy_at(p.eps)?)))
                        .collect(),
                ),
            ]
        })
        .collect();
    if !bands.is_empty() {
        crate::report::accuracy_chart(
            &format!(
                "Certified (proven) vs worst white-box attack (n = {n_wb}); between them: unknown"
            ),
            &bands,
            &out.join("whitebox-certified.png"),
        )
        .map_err(|e| anyhow::anyhow!("whitebox-certified.png: {e}"))?;
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
    .context("figure8-loss.png")?;
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

/// Accuracy per ε (rows) and model (columns, clean accuracy in the header); with `u8`,
/// each model also gets the column of adversarial images on the `u8` pixel grid.
fn table(results: &[ModelResults], eps: &[f32], pick: PickAttack, u8: bool) -> String {
    let mut s = String::from("| ε |");
    let mut columns = 0;
    for r in results {
        let clean = pick(r).map_or(String::new(), |a| {
            format!(" ({:.2}%)", a.clean_accuracy * 100.0)
        });
        s += &format!(" {}{clean} |", r.arch);
        columns += 1;
        if u8 {
            s += " u8 |";
            columns += 1;
        }
    }
    s += "\n|---|";
    s += &"---:|".repeat(columns);
    s.push('\n');
    let percent =
        |a: Option<f64>| a.map_or(" – |".to_string(), |a| format!(" {:.2}% |", a * 100.0));
    for &e in eps {
        s += &format!("| {e} |");
        for r in results {
            let point = pick(r).and_then(|a| a.point_at(e));
            s += &percent(point.map(|p| p.accuracy));
            if u8 {
                s += &percent(point.and_then(|p| p.accuracy_u8));
            }
        }
        s.push('\n');
    }
    s
}

/// Plain-language verdicts: robust to transfer, to the strongest white-box attacks, or
/// neither.
fn verdicts(results: &[ModelResults], probe: f32) -> String {
    let mut s = String::new();
    let base = results.iter().find(|r| r.arch == "standard");
    for r in results {
        let (bb, worst) = (r.blackbox.accuracy_at(probe), r.worst.accuracy_at(probe));
        let (Some(bb), Some(worst)) = (bb, worst) else {
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
        let white = if worst < 0.3 {
            format!(
                "but the white-box attacks **break it** (worst case {:.1}%)",
                worst * 100.0
            )
        } else {
            // Where the white-box attacks do win, if anywhere in the sweep.
            let falls = r
                .worst
                .points
                .iter()
                .find(|p| p.accuracy < 0.3)
                .map(|p| p.eps);
            let beyond = match falls {
                Some(e) => format!("; they bring it below 30% from ε = {e} on"),
                None => String::new(),
            };
            format!(
                "and holds {:.1}% against the per-image worst case of the white-box attacks{beyond}",
                worst * 100.0
            )
        };
        s += &format!("- At ε = {probe}, **{}** {transfer}, {white}.\n", r.arch);
    }
    s
}

/// The white-box results as bounds: certified ≤ robust accuracy ≤ worst attack ≤ clean.
fn certified_section(results: &[ModelResults]) -> String {
    let Some(settings) = results.iter().find_map(|r| r.certify.as_ref()) else {
        return String::new();
    };
    let mut s = format!(
        "\n## Certified accuracy: a proven lower bound under the attacks' upper bound\n\n`spartan certify` ({}; real-valued inputs, n = {}). For each image it either proves that no input within ε changes the class, finds an input that does (checked by inference), or gives up. The robust accuracy lies between the certified figure and the worst white-box attack; the band between them is **unknown**: neither proven nor refuted. See docs/certify.md for what is proven.\n\n| model | ε | certified | unknown | white-box worst case | clean |\n|---|---:|---:|---:|---:|---:|\n",
        settings.settings, settings.n
    );
    for r in results {
        let Some(c) = &r.certify else { continue };
        for p in c.points.iter().filter(|p| p.grid == Grid::Real) {
            let attack = r.worst.accuracy_at(p.eps);
            // The attacks' and the certifier's counterexamples are both upper bounds.
            let upper = attack.map_or(p.upper_bound, |a| a.min(p.upper_bound));
            s += &format!(
                "| {} | {} | {:.1}% | {:.1} points | {} | {:.1}% |\n",
                r.arch,
                p.eps,
                p.certified_accuracy * 100.0,
                (upper - p.certified_accuracy).max(0.0) * 100.0,
                attack.map_or("–".into(), |a| format!("{:.1}%", a * 100.0)),
                c.clean_accuracy * 100.0
            );
        }
    }
    s += "\n![Certified vs attacked accuracy](whitebox-certified.png)\n";
    s
}

fn render_report(
    cfg: &ReproduceConfig,
    data: &Splits,
    results: &[ModelResults],
    clock: &StageClock,
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
    s += &table(results, &cfg.eps, &|r| Some(&r.blackbox), false);
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
    let n_wb = cfg.white_box_images.min(data.test.len() - cfg.holdout);
    s += &format!(
        "\n## White-box attacks: per-image worst case (the headline)\n\nAn adversary who knows the model: an image counts as robust only if it survives every attack below, each run on its own (n = {n_wb}, the first evaluation images; true labels; seed {}). The `u8` columns give the same with every adversarial image rounded to the raw-pixel grid inside the ε-ball: what a microcontroller reading `u8` pixels sees (the filter-code search works on that grid directly; gradient attacks may lose some strength to the rounding). An image whose ball reaches only one code of the binary filter in every pixel gives the same output everywhere in its ball: it is robust exactly, and not attacked.\n\n",
        cfg.seed
    );
    s += &table(results, &cfg.white_box_eps, &|r| Some(&r.worst), true);
    s += "\n![White-box worst case](whitebox-worst-case.png)\n\nThe attacks:\n\n";
    for a in &cfg.white_box_attacks {
        s += &format!("- **{}**: {}.\n", a.name(), a.describe());
    }
    s += "\nA `–` marks an attack that does not apply: the filter-code search needs a per-pixel filtering layer (not the standard CNN), and BPDA identity only differs from the surrogate where the network has steps.\n";
    for a in &cfg.white_box_attacks {
        let name = a.name();
        let secs: Vec<String> = results
            .iter()
            .filter_map(|r| {
                let w = r.white_box(&name)?;
                Some(format!("{} {:.0} s", r.arch, w.seconds))
            })
            .collect();
        s += &format!(
            "\n### White-box {name}\n\n{}. Time: {}.\n\n",
            a.describe(),
            if secs.is_empty() {
                "–".into()
            } else {
                secs.join(", ")
            }
        );
        s += &table(results, &cfg.white_box_eps, &|r| r.white_box(&name), true);
        s += &format!("\n![White-box {name}](whitebox-{name}.png)\n");
    }
    s += &certified_section(results);
    s += "\n## Training loss (the paper's Figure 8)\n\nPer-batch loss (cross-entropy plus the filter regulariser) of Candidate C against the standard CNN.\n\n![Figure 8: loss curves](figure8-loss.png)\n";
    s += "\n## What this shows\n\n";
    for probe in [0.1f32, 0.3] {
        let swept = |eps: &[f32]| eps.iter().any(|&e| (e - probe).abs() < 1e-6);
        if swept(&cfg.eps) && swept(&cfg.white_box_eps) {
            s += &verdicts(results, probe);
        }
    }
    s += "\nA model that only resists the transferred (black-box) attack is not robust: an adversary who differentiates through its steps (BPDA, Athalye et al. 2018) is the honest test; the paper reports only the black-box attack. Where a filtered model does hold, the binary filter quantises each pixel to a few levels, so an ℓ∞ perturbation changes nothing until it reaches the distance between a pixel and a learned threshold: the accuracy then collapses at that ε (see the tables). That is input binarisation's known, limited robustness, not a proof of robustness: the worst case is an upper bound on robust accuracy from attacks (the filter-code search is exact about which codes each pixel can reach, but searches their combinations greedily).\n";
    s += &format!(
        "\n## Reproducibility\n\n- spartan {} built with {}\n- command: `{}`\n- seeds: training and attacks `{}`; data shuffling is seeded per epoch; chunked gradient sums make runs bit-identical across thread counts\n- total time of this invocation: {:.0} s (finished stages are reused on a rerun)\n- raw results: `models/<arch>/` (model.spartan, loss.csv, summary.json) and `attacks/<arch>/<attack>/` (attack.csv, attack.json)\n\nWall time of each stage of this invocation (a reused stage shows its loading time):\n\n{}",
        env!("CARGO_PKG_VERSION"),
        env!("SPARTAN_RUSTC_VERSION"),
        cfg.command,
        cfg.seed,
        clock.started.elapsed().as_secs_f64(),
        clock.table()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::StageClock;

    #[test]
    fn stage_clock_lists_stages_in_order_with_their_time() {
        let mut clock = StageClock::new(2);
        let answer = clock.time("train x".into(), || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            42
        });
        assert_eq!(answer, 42);
        clock.time("attack x".into(), || ());
        assert!(clock.done[0].1 >= 0.03 && clock.done[1].1 < clock.done[0].1);
        let table = clock.table();
        let (train, attack) = (table.find("| train x |"), table.find("| attack x |"));
        assert!(
            train.is_some() && attack.is_some() && train < attack,
            "{table}"
        );
        assert!(table.trim_end().ends_with("| 100% |"), "{table}");
    }
}
