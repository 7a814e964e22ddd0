//! The device driver on the host: embedded-hal-mock for the LED and the delay, a
//! scripted byte stream for the UART (embedded-hal-mock has no embedded-io mock), and
//! the committed candidate-c int8 model on real MNIST test images.

use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::digital::{Mock as PinMock, Transaction as PinTx};
use spartan_core::int8::Int8Model;
use spartan_mcu::driver::{Device, Info, Served, POLL_US};
use spartan_mcu::protocol::{
    encode, Decoder, ErrorCode, Event, CMD_CLASSIFY, CMD_ERROR, CMD_INFO, REPLY, SYNC,
};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Read;

/// A UART fed from a script: each `Some(bytes)` arrives at once, each `None` is one
/// poll of silence (`POLL_US`). Written bytes are collected.
#[derive(Default)]
struct ScriptedUart {
    script: VecDeque<Option<Vec<u8>>>,
    pending: VecDeque<u8>,
    written: Vec<u8>,
}

impl ScriptedUart {
    fn send(&mut self, bytes: &[u8]) {
        self.script.push_back(Some(bytes.to_vec()));
    }

    fn silence(&mut self, ms: usize) {
        for _ in 0..ms * (1000 / POLL_US as usize) {
            self.script.push_back(None);
        }
    }

    fn exhausted(&self) -> bool {
        self.script.is_empty() && self.pending.is_empty()
    }
}

impl embedded_io::ErrorType for ScriptedUart {
    type Error = Infallible;
}

impl embedded_io::ReadReady for ScriptedUart {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        if self.pending.is_empty() {
            match self.script.pop_front() {
                Some(Some(bytes)) => self.pending.extend(bytes),
                Some(None) | None => return Ok(false),
            }
        }
        Ok(!self.pending.is_empty())
    }
}

impl embedded_io::Read for ScriptedUart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let n = buf.len().min(self.pending.len());
        for b in &mut buf[..n] {
            *b = self.pending.pop_front().unwrap_or(0);
        }
        Ok(n)
    }
}

impl embedded_io::Write for ScriptedUart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

fn model_bytes() -> &'static [u8] {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/candidate-c.int8.spartan"
    );
    Box::leak(std::fs::read(path).unwrap().into_boxed_slice())
}

/// The first `n` MNIST test images (raw pixels) and labels from the embedded subset.
fn test_images(n: usize) -> (Vec<u8>, Vec<u8>) {
    let gunzip = |name: &str| {
        let path = format!("{}/../data/mnist-subset/{name}", env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    let images = gunzip("t10k-images-idx3-ubyte.gz")[16..16 + n * 784].to_vec();
    let labels = gunzip("t10k-labels-idx1-ubyte.gz")[8..8 + n].to_vec();
    (images, labels)
}

fn frame(cmd: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0; payload.len() + 6];
    let n = encode(cmd, payload, &mut out).unwrap();
    out.truncate(n);
    out
}

/// Decodes everything the device wrote into (cmd, payload) pairs.
fn replies(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for &b in bytes {
        if let Some(Event::Frame { cmd, payload }) = d.push(b) {
            out.push((cmd, payload.to_vec()));
        }
    }
    out
}

/// Polls the device until its script is consumed (a poll takes at most 64 bytes or
/// one millisecond of silence, so `polls` bounds the work); returns what it served,
/// the bytes it wrote, and the LED mock.
fn serve(
    uart: ScriptedUart,
    led: PinMock,
    arena: &mut [u8],
    polls: usize,
) -> (Vec<Served>, Vec<u8>, PinMock) {
    let mut dev = Device::new(uart, led, NoopDelay::new(), model_bytes(), arena)
        .unwrap()
        .with_timeout_ms(5);
    let mut served = Vec::new();
    for _ in 0..polls {
        dev.poll(&mut |s| served.push(s)).unwrap();
    }
    let (uart, led, _) = dev.release();
    assert!(uart.exhausted(), "script not consumed in {polls} polls");
    (served, uart.written, led)
}

fn host_classify(image: &[u8]) -> (usize, Vec<i8>) {
    let m = Int8Model::load(model_bytes()).unwrap();
    let mut arena = vec![0u8; m.arena_len()];
    let mut logits = vec![0i8; m.classes()];
    let c = m.infer(image, &mut arena, &mut logits).unwrap();
    (c, logits)
}

#[test]
fn good_frames_get_the_host_class_and_bad_ones_the_right_error() {
    let (images, labels) = test_images(3);
    let img = |i: usize| &images[i * 784..(i + 1) * 784];
    let mut uart = ScriptedUart::default();
    // Info; a good image; a bad CRC; a short frame (then the line goes quiet); an
    // oversize length; garbage between frames; an unknown command; a wrong size.
    // After every error, a good frame must still be served.
    uart.send(&frame(CMD_INFO, &[]));
    uart.send(&frame(CMD_CLASSIFY, img(0)));
    let mut bad = frame(CMD_CLASSIFY, img(1));
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    uart.send(&bad);
    uart.send(&frame(CMD_CLASSIFY, img(1)));
    uart.send(&frame(CMD_CLASSIFY, img(2))[..300]);
    uart.silence(10);
    uart.send(&frame(CMD_CLASSIFY, img(2)));
    uart.send(&[SYNC, CMD_CLASSIFY, 0xFF, 0xFF]);
    uart.silence(10);
    uart.send(&frame(CMD_CLASSIFY, img(0)));
    uart.send(b"\x00\x13\x37garbage");
    uart.send(&frame(CMD_CLASSIFY, img(1)));
    uart.send(&frame(0x42, &[]));
    uart.send(&frame(CMD_CLASSIFY, &[0; 10]));
    uart.silence(3);
    // One LED toggle per inference (five classifications).
    let led = PinMock::new(&vec![PinTx::toggle(); 5]);
    let model = Int8Model::load(model_bytes()).unwrap();
    let mut arena = vec![0u8; model.arena_len()];
    let (served, written, mut led) = serve(uart, led, &mut arena, 5000);
    led.done();
    let class = |i: usize| Served::Classified(host_classify(img(i)).0 as u8);
    assert_eq!(
        served,
        [
            Served::Info,
            class(0),
            Served::Error(ErrorCode::BadCrc),
            class(1),
            Served::Error(ErrorCode::Timeout),
            class(2),
            Served::Error(ErrorCode::Oversize),
            class(0),
            Served::Error(ErrorCode::Garbage),
            class(1),
            Served::Error(ErrorCode::UnknownCommand),
            Served::Error(ErrorCode::BadLength),
        ]
    );
    let r = replies(&written);
    assert_eq!(r.len(), served.len(), "one reply per request");
    let info = Info::from_bytes(&r[0].1).unwrap();
    assert_eq!(r[0].0, CMD_INFO | REPLY);
    assert_eq!(
        (info.model_crc, info.classes, info.filter_beta),
        (model.crc(), 10, 4)
    );
    assert_eq!(info.arena_bytes as usize, model.arena_len());
    // A classification reply carries the host's class and exact int8 logits.
    let (class0, logits0) = host_classify(img(0));
    assert_eq!(r[1].0, CMD_CLASSIFY | REPLY);
    assert_eq!(r[1].1[0] as usize, class0);
    let device_logits: Vec<i8> = r[1].1[1..].iter().map(|&b| b as i8).collect();
    assert_eq!(device_logits, logits0);
    assert_eq!(
        class0, labels[0] as usize,
        "the model gets the first test digit right"
    );
    assert_eq!(r[2], (CMD_ERROR, vec![ErrorCode::BadCrc as u8, 0]));
    assert_eq!(
        r[10],
        (CMD_ERROR, vec![ErrorCode::UnknownCommand as u8, 0x42])
    );
    assert_eq!(
        r[11],
        (CMD_ERROR, vec![ErrorCode::BadLength as u8, CMD_CLASSIFY])
    );
}

/// xorshift64: deterministic random streams.
fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// 10,000 random byte streams never panic the decoder or the device, and after the
/// line goes quiet a good frame is answered correctly.
#[test]
fn random_streams_never_break_the_service() {
    let (images, _) = test_images(1);
    let good = frame(CMD_CLASSIFY, &images[..784]);
    let want = Served::Classified(host_classify(&images[..784]).0 as u8);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    // The decoder alone: 10,000 streams, biased towards sync bytes so that the
    // length, payload and CRC states are all reached.
    for _ in 0..10_000 {
        let mut d = Decoder::new();
        let len = xorshift(&mut seed) % 2048;
        for _ in 0..len {
            let r = xorshift(&mut seed);
            let _ = d.push(if r.is_multiple_of(8) { SYNC } else { r as u8 });
        }
        let _ = d.timeout();
        let events: Vec<String> = good
            .iter()
            .filter_map(|&b| d.push(b).map(|e| format!("{e:?}")))
            .collect();
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].starts_with("Frame { cmd: 2"), "{events:?}");
    }
    // The whole device on a sample of streams: whatever came before, the good frame
    // after a quiet line is classified (and toggles the LED exactly once).
    let model = Int8Model::load(model_bytes()).unwrap();
    let mut arena = vec![0u8; model.arena_len()];
    for _ in 0..50 {
        let mut uart = ScriptedUart::default();
        let n = xorshift(&mut seed) % 3000;
        let stream: Vec<u8> = (0..n).map(|_| xorshift(&mut seed) as u8).collect();
        uart.send(&stream);
        uart.silence(10);
        uart.send(&good);
        let led = PinMock::new(&[PinTx::toggle()]);
        let (served, _, mut led) = serve(uart, led, &mut arena, 1000);
        led.done();
        assert_eq!(served.last(), Some(&want), "{served:?}");
    }
}
