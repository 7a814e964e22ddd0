//! Hostile and careless inputs through the `spartan` binary: commands read only the
//! files they use, oversized or endless files end in a clear error without filling
//! memory, and every error names the file and says what is wrong, once.

mod cli_support;

use cli_support::{assert_clean_error, images, labels, run_within, spartan, spartan_ok};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/candidate-c.f32.spartan"
);

fn dir_with(root: &Path, name: &str, files: &[(&str, Vec<u8>)]) -> String {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    for (file, bytes) in files {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    dir.to_str().unwrap().to_string()
}

#[test]
fn commands_read_only_the_files_they_use() {
    let tmp = tempfile::tempdir().unwrap();
    let test_only = dir_with(
        tmp.path(),
        "test-only",
        &[
            ("t10k-images-idx3-ubyte", images(200, 28)),
            ("t10k-labels-idx1-ubyte", labels(200)),
        ],
    );
    let stdout = |args: &[&str]| {
        let (out, _) = run_within(args, cli_support::LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let eval = stdout(&["eval", "--model", MODEL, "--data", &test_only]);
    assert!(eval.contains("on 200 test images"), "{eval}");
    let att = tmp.path().join("att");
    let attack = stdout(&[
        "--quiet",
        "attack",
        "--model",
        MODEL,
        "--attack",
        "fgsm",
        "--eps",
        "0,0.1",
        "--white-box-images",
        "10",
        "--data",
        &test_only,
        "--out",
        att.to_str().unwrap(),
    ]);
    assert!(attack.contains("clean accuracy"), "{attack}");

    let train_only = dir_with(
        tmp.path(),
        "train-only",
        &[
            ("train-images-idx3-ubyte", images(30, 28)),
            ("train-labels-idx1-ubyte", labels(30)),
        ],
    );
    let int8 = tmp.path().join("m.int8.spartan");
    let q = stdout(&[
        "quantize",
        "--model",
        MODEL,
        "--calib",
        "20",
        "--data",
        &train_only,
        "--out",
        int8.to_str().unwrap(),
    ]);
    assert!(q.contains("calibrated on 20 images"), "{q}");
}

/// A gzip bomb (a few hundred kB that inflate to a header declaring 3 GB and 64 MiB of
/// zeros) ends at its header; an endless model file at its first bytes.
#[test]
fn bombs_and_endless_files_end_in_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&cli_support::idx(&[4_000_000, 28, 28], &[]))
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = dir_with(
        tmp.path(),
        "bomb",
        &[
            ("t10k-images-idx3-ubyte.gz", enc.finish().unwrap()),
            ("t10k-labels-idx1-ubyte", labels(10)),
        ],
    );
    let (out, took) = run_within(
        &["eval", "--model", MODEL, "--data", &bomb],
        Duration::from_secs(60),
    );
    assert_clean_error(
        &out,
        "t10k-images-idx3-ubyte.gz: the header declares 4000000×28×28",
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    if Path::new("/dev/zero").exists() {
        let (out, _) = run_within(&["eval", "--model", "/dev/zero"], Duration::from_secs(60));
        assert_clean_error(&out, "/dev/zero: not a Spartan model file");
    }
}

#[test]
fn errors_name_the_file_and_say_what_is_wrong_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let unused = d.join("unused");
    let unused = unused.to_str().unwrap();
    // A run directory under a file: the OS error appears once, after the path.
    let file = d.join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let under = file.join("run");
    assert_clean_error(
        &spartan(&["train", "--out", under.to_str().unwrap()]),
        "plain-file/run: cannot create: Not a directory",
    );
    // A spec for 3-channel images on 1-channel data names the channels.
    let spec = String::from_utf8(spartan(&["spec", "--arch", "standard"]).stdout).unwrap();
    let rgb = d.join("rgb.toml");
    std::fs::write(&rgb, spec.replace("channels = 1", "channels = 3")).unwrap();
    assert_clean_error(
        &spartan(&["train", "--arch", rgb.to_str().unwrap(), "--out", unused]),
        "images are 28×28×1, expected 28×28×3",
    );
    // A spec that parses but cannot be built says why once.
    let empty = d.join("empty-dense.toml");
    assert!(spec.contains("units = 10\n"));
    std::fs::write(&empty, spec.replace("units = 10\n", "units = 0\n")).unwrap();
    assert_clean_error(
        &spartan(&["train", "--arch", empty.to_str().unwrap(), "--out", unused]),
        "a dense layer needs units >= 1",
    );
    // A typo in an optional key is an error, not a default.
    let typo = d.join("typo.toml");
    let spec_c = String::from_utf8(spartan(&["spec", "--arch", "candidate-c"]).stdout).unwrap();
    assert!(spec_c.contains("sf = "));
    std::fs::write(&typo, spec_c.replacen("sf = ", "sff = ", 1)).unwrap();
    let line = spec_c.lines().position(|l| l.starts_with("sf = ")).unwrap() + 1;
    assert_clean_error(
        &spartan(&["train", "--arch", typo.to_str().unwrap(), "--out", unused]),
        &format!("typo.toml, line {line}: not a valid architecture spec: unknown field `sff`"),
    );
    // The device runs int8 models: an f32 one is named.
    assert_clean_error(
        &spartan(&["device", "--model", MODEL, "--serial", "/nonexistent-port"]),
        "candidate-c.f32.spartan: an f32 model",
    );
    // A missing model file.
    let missing = d.join("missing.spartan");
    assert_clean_error(
        &spartan(&["eval", "--model", missing.to_str().unwrap()]),
        "missing.spartan: cannot read: No such file",
    );
    spartan_ok(&["--quiet", "spec", "--arch", "standard"]);
}
