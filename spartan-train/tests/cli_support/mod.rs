//! Running the `spartan` binary in tests: with a deadline, on small generated IDX data,
//! and checking its errors are one clean line.
#![allow(dead_code)] // each test file uses part of it

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest any one `spartan` run of the tests may take.
pub const LIMIT: Duration = Duration::from_secs(300);

/// A `spartan` command without the user's `SPARTAN_DATA`.
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spartan"));
    c.args(args).env_remove("SPARTAN_DATA").stdin(Stdio::null());
    c
}

/// Runs `spartan ARGS`, killing it after `limit`; returns its output and run time.
pub fn run_within(args: &[&str], limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run spartan");
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("spartan {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = start.elapsed();
    (child.wait_with_output().expect("output"), took)
}

/// Runs `spartan ARGS` within [`LIMIT`].
pub fn spartan(args: &[&str]) -> Output {
    run_within(args, LIMIT).0
}

/// Runs `spartan ARGS` within [`LIMIT`] and asserts it succeeds; returns its stderr.
pub fn spartan_ok(args: &[&str]) -> String {
    let out = spartan(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "spartan {args:?} failed: {stderr}");
    stderr
}

/// Asserts failure with a single `error:` line mentioning `needle`, no panic, and no
/// part of the message said twice (a cause printed in a message and again in the chain).
pub fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let line = *lines.last().expect("an error line");
    assert!(line.starts_with("error: "), "{stderr}");
    assert!(
        lines.len() == 1 || !lines[..lines.len() - 1].iter().any(|l| l.contains("error")),
        "want one error line, got: {stderr}"
    );
    assert!(line.contains(needle), "want {needle:?} in: {stderr}");
    let parts: Vec<&str> = line.split(": ").filter(|p| p.len() > 8).collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(!parts[i + 1..].contains(p), "{p:?} said twice in: {line}");
    }
}

/// IDX bytes of unsigned bytes.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// Images `n × side × side` of a fixed pattern.
pub fn images(n: usize, side: u32) -> Vec<u8> {
    let len = side as usize * side as usize;
    idx(
        &[n as u32, side, side],
        &(0..n * len)
            .map(|i| (i * 37 % 256) as u8)
            .collect::<Vec<_>>(),
    )
}

/// Labels `i % 10`.
pub fn labels(n: usize) -> Vec<u8> {
    idx(
        &[n as u32],
        &(0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>(),
    )
}

/// A tiny MNIST-format directory: 20 training and 10 test 28×28 images.
pub fn write_dataset(dir: &Path) {
    std::fs::write(dir.join("train-images-idx3-ubyte"), images(20, 28)).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), labels(20)).unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), images(10, 28)).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), labels(10)).unwrap();
}
