//! Run directories that can't be spoiled, through the `spartan` binary: a directory
//! holds one run (reusing it needs `--resume` or `--overwrite`), a lock keeps a second
//! process out, a checkpoint continues only the run that wrote it, and `--resume`
//! refuses the settings it cannot honour. Small generated data: each run takes moments.

mod cli_support;

use cli_support::{assert_clean_error, command, spartan, spartan_ok, write_dataset};
use spartan_train::train::{files, RunDir};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `spartan --quiet train` of the standard network on the tiny data in `data`, 2 epochs
/// of batch 5 unless `extra` says otherwise, into `--out out`.
fn train_args<'a>(data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--quiet", "train", "--arch", "standard", "--data", data];
    v.extend_from_slice(extra);
    for (flag, default) in [("--epochs", "2"), ("--batch", "5")] {
        if !extra.contains(&flag) {
            v.extend_from_slice(&[flag, default]);
        }
    }
    v.extend_from_slice(&["--out", out]);
    v
}

fn run_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(files::CONFIG)).unwrap()).unwrap()
}

fn tiny_data(root: &Path) -> String {
    let data = root.join("data");
    std::fs::create_dir(&data).unwrap();
    write_dataset(&data);
    data.to_str().unwrap().to_string()
}

#[test]
fn a_used_directory_is_refused_unless_overwritten_and_a_live_lock_keeps_others_out() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let dir = tmp.path().join("run");
    let d = dir.to_str().unwrap();
    spartan_ok(&train_args(&data, d, &[]));
    let model = std::fs::read(dir.join(files::MODEL)).unwrap();
    let first = run_json(&dir);

    assert_clean_error(
        &spartan(&train_args(&data, d, &["--seed", "2"])),
        "already holds files",
    );
    assert_eq!(std::fs::read(dir.join(files::MODEL)).unwrap(), model);
    assert_eq!(run_json(&dir), first, "the refused run wrote nothing");

    spartan_ok(&train_args(&data, d, &["--seed", "2", "--overwrite"]));
    let second = run_json(&dir);
    assert_eq!(second["seed"], 2);
    assert_ne!(second["run_id"], first["run_id"]);

    // A live process holds the lock (here: this one): nobody else writes the run.
    let lock = RunDir::open(&dir).lock().unwrap();
    let pid = format!("pid {}", std::process::id());
    for args in [
        vec!["--quiet", "train", "--resume", d],
        train_args(&data, d, &["--overwrite"]),
    ] {
        assert_clean_error(&spartan(&args), &format!("in use by another run ({pid})"));
    }
    drop(lock);
    spartan_ok(&["--quiet", "train", "--resume", d]);
}

#[test]
fn a_checkpoint_resumes_only_its_own_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    spartan_ok(&train_args(&data, a.to_str().unwrap(), &[]));
    spartan_ok(&train_args(&data, b.to_str().unwrap(), &["--seed", "2"]));
    let b_checkpoint = std::fs::read(b.join(files::CHECKPOINT)).unwrap();
    let resume_b = ["--quiet", "train", "--resume", b.to_str().unwrap()];

    // Run A's checkpoint beside run B's run.json.
    std::fs::copy(a.join(files::CHECKPOINT), b.join(files::CHECKPOINT)).unwrap();
    assert_clean_error(&spartan(&resume_b), "checkpoint.bin: written by run");

    // Run B's own checkpoint, but its run.json edited.
    std::fs::write(b.join(files::CHECKPOINT), &b_checkpoint).unwrap();
    spartan_ok(&resume_b);
    let text = std::fs::read_to_string(b.join(files::CONFIG)).unwrap();
    let edited = text.replace("\"seed\": 2", "\"seed\": 3");
    assert_ne!(edited, text);
    std::fs::write(b.join(files::CONFIG), edited).unwrap();
    assert_clean_error(&spartan(&resume_b), "run.json: edited");
}

/// `--overwrite` removes the old run's results before anything else, so a replacing
/// run killed early leaves nothing of the old one, and resumes to the model an
/// uninterrupted run of its own makes.
#[test]
fn an_overwriting_run_killed_early_leaves_nothing_of_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let (dir, straight) = (tmp.path().join("run"), tmp.path().join("straight"));
    let d = dir.to_str().unwrap();
    spartan_ok(&train_args(&data, d, &["--epochs", "1"]));
    let b = ["--seed", "2", "--epochs", "40"];
    spartan_ok(&train_args(&data, straight.to_str().unwrap(), &b));

    let mut args = train_args(&data, d, &b);
    args.push("--overwrite");
    let mut child = command(&args).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    let replaced = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "run.json not replaced"
        );
        let seed = std::fs::read(dir.join(files::CONFIG))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|v| v["seed"].clone());
        if seed == Some(2.into()) {
            break true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    assert!(replaced, "the overwriting run ended before it was seen");
    let summary = std::fs::read(dir.join(files::SUMMARY)).ok();
    let finished = summary.is_some_and(|s| String::from_utf8_lossy(&s).contains("\"seed\": 2"));
    if !finished {
        assert!(
            !dir.join(files::MODEL).exists(),
            "the old run's model is still there"
        );
        assert!(!dir.join(files::SUMMARY).exists());
    }
    spartan_ok(&["--quiet", "train", "--resume", d]);
    assert_eq!(
        std::fs::read(dir.join(files::MODEL)).unwrap(),
        std::fs::read(straight.join(files::MODEL)).unwrap()
    );
}

#[test]
fn resume_refuses_the_settings_it_cannot_honour_and_extends_epochs_when_it_can() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let (dir, straight) = (tmp.path().join("run"), tmp.path().join("straight"));
    let d = dir.to_str().unwrap();
    spartan_ok(&train_args(&data, d, &["--anneal-epochs", "0"]));
    let resume = |extra: &[&str]| {
        let mut v = vec!["--quiet", "train", "--resume", d];
        v.extend_from_slice(extra);
        spartan(&v)
    };
    for (flag, value) in [
        ("--lr", "0.01"),
        ("--data", "/nowhere"),
        ("--batch", "3"),
        ("--seed", "9"),
    ] {
        assert_clean_error(&resume(&[flag, value]), &format!("{flag} cannot be given"));
    }
    // A constant rate: 3 epochs resumed from 2 are exactly an uninterrupted 3.
    assert!(resume(&["--epochs", "3"]).status.success());
    assert_eq!(run_json(&dir)["epochs"], 3);
    let extra = ["--anneal-epochs", "0", "--epochs", "3"];
    spartan_ok(&train_args(&data, straight.to_str().unwrap(), &extra));
    assert_eq!(
        std::fs::read(dir.join(files::MODEL)).unwrap(),
        std::fs::read(straight.join(files::MODEL)).unwrap()
    );
    assert_clean_error(&resume(&["--epochs", "2"]), "3 epochs are done already");

    // The default schedule annealed the end of the 2 epochs: 3 would not have.
    let annealed = tmp.path().join("annealed");
    spartan_ok(&train_args(&data, annealed.to_str().unwrap(), &[]));
    let out = spartan(&[
        "--quiet",
        "train",
        "--resume",
        annealed.to_str().unwrap(),
        "--epochs",
        "3",
    ]);
    assert_clean_error(&out, "learning-rate schedule");
}
