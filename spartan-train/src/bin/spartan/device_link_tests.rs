//! The host client (`device`) against a fake device on a pseudo-terminal:
//! a healthy device, a silent one, noise between frames, a stray 0xA5 before each frame,
//! error frames, lost requests, corrupt replies, refusals, and a device that dies
//! mid-run. Every test runs under its own deadline (`within`), so none can hang.
#![cfg(unix)]

// The fake device is shared with the CLI tests of `tests/device_cli.rs`.
#[path = "../../../tests/common/mod.rs"]
mod common;

use crate::device::{Client, DeviceError, LinkStats, SerialLink};
use common::{host_classify, test_images, within, Behaviour, FakeDevice};
use spartan_core::int8::Int8Model;
use spartan_core::protocol::{ErrorCode, Info};
use std::time::Duration;

/// Connects a client (timeout `timeout`, 4 attempts) to a fake device behaving as `b`,
/// and runs the handshake and `images` classifications, checking every answer against
/// the host's int8 path. Returns the link's statistics.
fn classify_all(b: Behaviour, timeout: Duration, images: usize) -> Result<LinkStats, DeviceError> {
    let mut device = FakeDevice::spawn(b);
    let mut client = Client::new(SerialLink::new(Box::new(device.slave.take().unwrap())));
    client.timeout = timeout;
    client.attempts = 4;
    let info = client.handshake()?;
    assert_eq!(
        info,
        Info::of(&Int8Model::load(common::model_bytes()).unwrap())
    );
    for image in test_images(images) {
        let got = client.classify(&image)?;
        assert_eq!(
            got,
            host_classify(&image),
            "the device's answer is the host's"
        );
    }
    Ok(client.stats())
}

fn limit() -> Duration {
    Duration::from_secs(60)
}

#[test]
fn a_healthy_device_answers_every_request_first_time() {
    let (stats, _) = within(limit(), || {
        classify_all(Behaviour::default(), Duration::from_secs(2), 30)
    });
    let stats = stats.unwrap();
    assert_eq!(stats.answered, 31);
    assert_eq!((stats.resent, stats.broken, stats.errors), (0, 0, 0));
}

#[test]
fn a_silent_device_times_out_within_the_timeout_and_says_what_it_saw() {
    let timeout = Duration::from_secs(1);
    let (result, took) = within(limit(), move || {
        let b = Behaviour {
            silent: true,
            ..Behaviour::default()
        };
        classify_all(b, timeout, 1)
    });
    let e = result.unwrap_err();
    assert!(took < timeout + Duration::from_secs(1), "{took:?}");
    assert!(took >= timeout, "gave up early: {took:?}");
    let msg = e.to_string();
    assert!(matches!(e, DeviceError::NoAnswer { .. }), "{msg}");
    assert!(
        msg.contains("no valid answer to the info request within 1.0s"),
        "{msg}"
    );
    assert!(msg.contains("no reply within"), "{msg}");
}

#[test]
fn noise_between_frames_costs_no_answer() {
    let b = Behaviour {
        noise: true,
        ..Behaviour::default()
    };
    let (stats, _) = within(limit(), || classify_all(b, Duration::from_secs(2), 40));
    let stats = stats.unwrap();
    assert_eq!(stats.answered, 41);
    assert!(
        stats.broken > 0,
        "the noise was seen as broken frames: {stats:?}"
    );
}

#[test]
fn a_stray_a5_before_each_frame_costs_no_answer() {
    let b = Behaviour {
        stray_a5: true,
        ..Behaviour::default()
    };
    let (stats, _) = within(limit(), || classify_all(b, Duration::from_secs(2), 40));
    let stats = stats.unwrap();
    assert_eq!(stats.answered, 41);
    assert!(
        stats.broken >= 41,
        "each 0xA5 is its own broken frame: {stats:?}"
    );
}

#[test]
fn error_frames_corrupt_replies_and_lost_requests_are_retried() {
    for (what, b) in [
        (
            "error replies",
            Behaviour {
                error_every: Some(3),
                ..Behaviour::default()
            },
        ),
        (
            "corrupt replies",
            Behaviour {
                corrupt_every: Some(4),
                ..Behaviour::default()
            },
        ),
        (
            "lost requests",
            Behaviour {
                lose_every: Some(5),
                ..Behaviour::default()
            },
        ),
    ] {
        let (stats, _) = within(limit(), || classify_all(b, Duration::from_secs(2), 20));
        let stats = stats.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(stats.answered, 21, "{what}");
        assert!(stats.resent >= 4, "{what}: {stats:?}");
    }
}

#[test]
fn a_device_that_keeps_failing_is_reported_after_the_attempts_with_what_was_seen() {
    let b = Behaviour {
        always: Some(ErrorCode::Corrupt),
        ..Behaviour::default()
    };
    let timeout = Duration::from_secs(2);
    let (result, took) = within(limit(), move || classify_all(b, timeout, 1));
    let e = result.unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, DeviceError::NoAnswer { attempts: 4, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("error reply: corrupt frame (bad COBS or CRC) (×4)"),
        "{msg}"
    );
    assert!(
        took < timeout,
        "transient errors are retried at once: {took:?}"
    );
}

#[test]
fn a_refusal_fails_at_once() {
    let b = Behaviour {
        always: Some(ErrorCode::ImageSize {
            expected: 784,
            got: 3,
        }),
        ..Behaviour::default()
    };
    let (result, _) = within(limit(), move || classify_all(b, Duration::from_secs(30), 1));
    let e = result.unwrap_err();
    assert!(matches!(e, DeviceError::Refused { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("image of 3 pixels, the model takes 784"),
        "{e}"
    );
}

#[test]
fn a_device_that_dies_mid_run_ends_the_run_at_once() {
    let b = Behaviour {
        die_after: Some(5),
        ..Behaviour::default()
    };
    let timeout = Duration::from_secs(30);
    let (result, took) = within(limit(), move || classify_all(b, timeout, 20));
    let e = result.unwrap_err();
    assert!(matches!(e, DeviceError::Link(_)), "{e}");
    assert!(
        took < Duration::from_secs(10),
        "no waiting for the timeout: {took:?}"
    );
}
