//! `spartan device --serial` end to end on a pseudo-terminal, as a user runs it: the
//! binary opens and configures the port itself, classifies 100 images against a fake
//! device (the core's int8 model) with `--timeout 2`, and on a silent port exits
//! non-zero within 3 s with a clear message. Each run is killed at a deadline.
#![cfg(unix)]

mod cli_support;
mod common;

use cli_support::run_within as spartan;
use common::{Behaviour, FakeDevice};
use std::time::Duration;

#[test]
fn spartan_device_serial_classifies_100_images_on_a_pseudo_terminal() {
    let device = FakeDevice::spawn(Behaviour::default());
    let (out, _) = spartan(
        &[
            "--quiet",
            "device",
            "--serial",
            &device.path,
            "--images",
            "100",
            "--timeout",
            "2",
            "--model",
            common::model_path(),
        ],
        Duration::from_secs(120),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    println!("{stdout}"); // the run's report, for `cargo test -- --nocapture`
    assert!(
        stdout.contains("(100/100)") || stdout.contains("/100) in"),
        "{stdout}"
    );
    assert!(
        stdout.contains("logits differing from the host: 0 of 1000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("101 requests answered, 0 resent"),
        "{stdout}"
    );
    assert_eq!(device.stop().classified, 100);
}

#[test]
fn spartan_device_on_a_silent_port_exits_non_zero_within_3_s() {
    let device = FakeDevice::spawn(Behaviour {
        silent: true,
        ..Behaviour::default()
    });
    let (out, took) = spartan(
        &[
            "--quiet",
            "device",
            "--serial",
            &device.path,
            "--timeout",
            "2",
        ],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("exit after {took:?}: {stderr}");
    assert!(!out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.starts_with("error: the device does not answer"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no valid answer to the info request within 2.0s"),
        "{stderr}"
    );
    assert!(device.stop().requests >= 4, "the handshake was repeated");
}

#[test]
fn spartan_device_rejects_bad_ports_and_arguments_clearly() {
    let limit = Duration::from_secs(30);
    let (out, _) = spartan(&["device", "--serial", "/nonexistent/tty"], limit);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot open serial port /nonexistent/tty"),
        "{stderr}"
    );
    for bad in ["0", "-1", "nan", "1e9"] {
        let arg = format!("--timeout={bad}");
        let (out, _) = spartan(&["device", "--serial", "/dev/null", &arg], limit);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--timeout {bad}");
        assert!(stderr.contains("--timeout"), "{stderr}");
    }
    // Listing ports works without any system library (no libudev).
    let (out, _) = spartan(&["device", "--list"], limit);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
}
