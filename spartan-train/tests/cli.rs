//! The `spartan` binary end to end: bad input gives a one-line error and a non-zero
//! exit (never a panic), and an interrupted run resumes to the same result.

mod cli_support;

use cli_support::{assert_clean_error, command, idx, spartan, write_dataset};
use std::process::Stdio;

#[test]
fn bad_inputs_get_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let run = d.join("run");
    let run_s = run.to_str().unwrap();
    let data = d.join("data");
    std::fs::create_dir(&data).unwrap();
    let data_s = data.to_str().unwrap();
    write_dataset(&data);

    assert_clean_error(
        &spartan(&["train", "--batch", "0", "--out", run_s]),
        "--batch must be at least 1",
    );
    assert_clean_error(
        &spartan(&["train", "--epochs", "0", "--out", run_s]),
        "--epochs must be at least 1",
    );
    assert_clean_error(
        &spartan(&[
            "train",
            "--data",
            d.join("nowhere").to_str().unwrap(),
            "--out",
            run_s,
        ]),
        "does not exist",
    );
    assert_clean_error(
        &spartan(&["train", "--arch", "candidate-x", "--out", run_s]),
        "unknown architecture",
    );

    // Truncated images file.
    let full = std::fs::read(data.join("train-images-idx3-ubyte")).unwrap();
    std::fs::write(
        data.join("train-images-idx3-ubyte"),
        &full[..full.len() - 100],
    )
    .unwrap();
    assert_clean_error(
        &spartan(&["train", "--data", data_s, "--out", run_s]),
        "truncated",
    );
    // Wrong magic.
    let mut bad = full.clone();
    bad[2] = 0x0b;
    std::fs::write(data.join("train-images-idx3-ubyte"), &bad).unwrap();
    assert_clean_error(
        &spartan(&["train", "--data", data_s, "--out", run_s]),
        "not an IDX file",
    );
    std::fs::write(data.join("train-images-idx3-ubyte"), &full).unwrap();
    // Label count differs from the image count.
    std::fs::write(data.join("train-labels-idx1-ubyte"), idx(&[19], &[1; 19])).unwrap();
    assert_clean_error(
        &spartan(&["train", "--data", data_s, "--out", run_s]),
        "20 images, but",
    );
    // A model file that is not one.
    let junk = d.join("junk.spartan");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    assert_clean_error(
        &spartan(&["eval", "--model", junk.to_str().unwrap()]),
        "not a Spartan model file",
    );
    assert_clean_error(
        &spartan(&["inspect", d.join("missing").to_str().unwrap()]),
        "missing: cannot read",
    );
    assert!(!run.join("model.spartan").exists());
}

#[test]
fn attack_inputs_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let out = d.join("att");
    let out_s = out.to_str().unwrap();
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/candidate-c.f32.spartan"
    );
    let attack = |extra: &[&str]| {
        let mut args = vec![
            "attack", "--model", model, "--attack", "fgsm", "--out", out_s,
        ];
        args.extend_from_slice(extra);
        spartan(&args)
    };
    assert_clean_error(&attack(&["--eps", "0.1,1.5"]), "outside [0, 1]");
    assert_clean_error(&attack(&["--eps", "-0.2"]), "outside [0, 1]");
    assert_clean_error(&attack(&["--eps", ""]), "empty ε list");
    assert_clean_error(&attack(&["--eps", "0:0.3"]), "start:stop:step");
    assert_clean_error(
        &attack(&["--pgd-restarts", "0"]),
        "--pgd-restarts must be between 1 and 10000",
    );
    assert_clean_error(
        &attack(&["--codes-probe-rounds", "99999"]),
        "--codes-probe-rounds must be at most 10000",
    );
    assert_clean_error(
        &attack(&["--settle-after", "0"]),
        "--settle-after must be between 1 and 1000",
    );
    assert_clean_error(
        &attack(&["--warm-start", "--eps-order", "descending"]),
        "it needs --eps-order ascending",
    );
    let junk = d.join("junk.bin");
    std::fs::write(&junk, vec![7u8; 100]).unwrap();
    assert_clean_error(
        &spartan(&[
            "attack",
            "--model",
            junk.to_str().unwrap(),
            "--attack",
            "pgd",
            "--out",
            out_s,
        ]),
        "not a Spartan model file",
    );
    // 20×20 images against a 28×28 model.
    let data = d.join("small");
    std::fs::create_dir(&data).unwrap();
    let img = |n: u32| idx(&[n, 20, 20], &vec![9u8; (n * 400) as usize]);
    let lab = |n: u32| idx(&[n], &(0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>());
    std::fs::write(data.join("train-images-idx3-ubyte"), img(10)).unwrap();
    std::fs::write(data.join("train-labels-idx1-ubyte"), lab(10)).unwrap();
    std::fs::write(data.join("t10k-images-idx3-ubyte"), img(200)).unwrap();
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), lab(200)).unwrap();
    assert_clean_error(
        &attack(&["--data", data.to_str().unwrap()]),
        "images are 20×20×1, expected 28×28×1",
    );
    assert!(!out.exists(), "nothing written on bad input");
}

fn train_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--quiet",
        "train",
        "--arch",
        "candidate-a",
        "--epochs",
        "3",
        "--train-limit",
        "1500",
        "--batch",
        "50",
        "--seed",
        "3",
    ];
    v.extend_from_slice(extra);
    v.extend_from_slice(&["--out", out]);
    v
}

#[test]
fn killed_run_resumes_to_the_same_model() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let out = spartan(&train_args(straight.to_str().unwrap(), &[]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let killed = tmp.path().join("killed");
    let mut child = command(&train_args(killed.to_str().unwrap(), &[]))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the first epoch's checkpoint, then kill -9 in the middle of the next.
    let ckpt = killed.join("checkpoint.bin");
    let t0 = std::time::Instant::now();
    while !ckpt.exists() {
        assert!(t0.elapsed().as_secs() < 300, "no checkpoint written");
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    let model = killed.join("model.spartan");
    if model.exists() {
        // Killed too late to interrupt: still, the file must be whole.
        spartan_core::float::F32Model::load(&std::fs::read(&model).unwrap()).unwrap();
    }
    // The killed run's lock file stays behind, stale: the resumed run takes it over.
    assert!(killed.join(".lock").is_file());
    let out = spartan(&["--quiet", "train", "--resume", killed.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(straight.join("model.spartan")).unwrap(),
        std::fs::read(&model).unwrap(),
        "resumed model differs from the uninterrupted one"
    );
    assert_eq!(
        std::fs::read_to_string(straight.join("loss.csv")).unwrap(),
        std::fs::read_to_string(killed.join("loss.csv")).unwrap()
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(killed.join("summary.json")).unwrap())
            .unwrap();
    assert!(
        summary["test_accuracy"].as_f64().unwrap() > 0.5,
        "{summary}"
    );
}

#[test]
fn certify_writes_its_results_and_checks_its_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cert");
    let out_s = out.to_str().unwrap();
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/");
    let f32_model = format!("{models}candidate-c.f32.spartan");
    let certify = |model: &str, extra: &[&str]| {
        let mut args = vec!["--quiet", "certify", "--model", model, "--out", out_s];
        args.extend_from_slice(extra);
        spartan(&args)
    };
    assert_clean_error(&certify(&f32_model, &["--eps", "0.1,2"]), "outside [0, 1]");
    assert_clean_error(&certify(&f32_model, &["--images", "0"]), "--images");
    assert_clean_error(&certify(&f32_model, &["--budget", "0"]), "--budget");
    assert_clean_error(
        &certify(&format!("{models}candidate-c.int8.spartan"), &[]),
        "needs a float model",
    );
    assert!(!out.exists(), "nothing written on bad input");
    // Ten embedded test images at two radii on both grids.
    let ok = certify(&f32_model, &["--eps", "0.02,0.3", "--images", "10"]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(stdout.matches("certified").count(), 4, "{stdout}");
    let csv = std::fs::read_to_string(out.join("certify.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.starts_with("grid,epsilon,n,proven,counterexample,unknown"));
    for row in csv.lines().skip(1) {
        let f: Vec<&str> = row.split(',').collect();
        let n: usize = f[2].parse().unwrap();
        let sum: usize = f[3..6].iter().map(|v| v.parse::<usize>().unwrap()).sum();
        assert_eq!((n, sum), (10, 10), "{row}");
    }
    assert!(out.join("certify.json").is_file() && out.join("certify.png").is_file());
    // At ε = 0.3 the attack proposals break some of these images: their inputs are saved.
    let cx = std::fs::read_dir(out.join("counterexamples"))
        .unwrap()
        .count();
    assert!(cx >= 2, "{cx} counterexample files");
}

/// `bench train --input mnist` trains on real images (where a filtered network skips
/// the background), says so, and prints the peer script's lines.
#[test]
fn bench_trains_on_real_images_when_asked() {
    let args = [
        "bench",
        "train",
        "--arch",
        "candidate-b",
        "--input",
        "mnist",
        "--batch",
        "8",
        "--steps",
        "1",
        "--repeats",
        "1",
    ];
    let out = spartan(&args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("on the training images of the embedded MNIST subset"),
        "{stderr}"
    );
    for line in ["spartan train_b8 median=", "spartan infer_b256 median="] {
        assert!(stdout.contains(line), "no {line:?} in {stdout}");
    }
}

#[test]
fn import_brings_back_what_export_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/candidate-c.f32.spartan"
    );
    let path = |name: &str| d.join(name).to_str().unwrap().to_string();
    let (st, back) = (path("c.safetensors"), path("back.spartan"));
    let (st_again, back_again) = (path("again.safetensors"), path("again.spartan"));
    cli_support::spartan_ok(&["export", "--model", model, "--out", &st]);
    let stdout = |args: &[&str]| {
        let out = spartan(args);
        assert!(out.status.success(), "spartan {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    };
    let said = stdout(&["import", "--safetensors", &st, "--out", &back]);
    assert!(said.contains("9 layers, 55096 parameters"), "{said}");
    // Exported again and imported again, the model file comes back to the byte.
    cli_support::spartan_ok(&["export", "--model", &back, "--out", &st_again]);
    stdout(&["import", "--safetensors", &st_again, "--out", &back_again]);
    let same = std::fs::read(&back).unwrap() == std::fs::read(&back_again).unwrap();
    assert!(
        same,
        "import(export(import(export(m)))) differs from import(export(m))"
    );
    let same = std::fs::read(&st).unwrap() == std::fs::read(&st_again).unwrap();
    assert!(
        same,
        "the imported model exports to other bytes than the original"
    );
    // The imported model classifies as the original does.
    let eval = |m: &str| stdout(&["eval", "--model", m]).replace(m, "MODEL");
    assert_eq!(eval(model), eval(&back));

    // A damaged file: a one-line error, and nothing written.
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let out = path("never.spartan");
    assert_clean_error(
        &spartan(&["import", "--safetensors", &st, "--out", &out]),
        "not a readable safetensors file",
    );
    assert!(!d.join("never.spartan").exists());
}
