//! The device driver on the host: embedded-hal-mock for the LED and the delay, a
//! scripted byte stream for the UART (embedded-hal-mock has no embedded-io mock), and
//! the committed candidate-c int8 model on real MNIST test images.

use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::digital::{Mock as PinMock, Transaction as PinTx};
use spartan_core::int8::Int8Model;
use spartan_core::protocol::{
    encode, Classification, ErrorCode, FrameDecoder, Info, Message, Request, Response, MAX_FRAME,
};
use spartan_mcu::driver::{Device, Served, POLL_US};
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

/// One request frame.
fn frame(id: u16, request: Request<'_>) -> Vec<u8> {
    let mut out = vec![0; MAX_FRAME + 2];
    let n = encode(
        &Message {
            id: Some(id),
            body: request,
        },
        &mut out,
    )
    .unwrap();
    out.truncate(n);
    out
}

/// Decodes everything the device wrote; every byte must belong to a good frame.
fn replies(bytes: &[u8]) -> Vec<Message<Response>> {
    let mut d = FrameDecoder::<MAX_FRAME>::new();
    bytes
        .iter()
        .filter_map(|&b| d.push::<Response>(b))
        .map(|r| r.expect("the device writes only good frames"))
        .collect()
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
    let classify = |id: u16, i: usize| frame(id, Request::Classify(img(i)));
    let mut uart = ScriptedUart::default();
    // Info; a good image; a changed byte; a short frame (then the line goes quiet); an
    // oversize frame; garbage and a stray 0xA5 right before a frame (no silence); a
    // frame this device does not know; a wrong image size. After every error, a good
    // frame must still be served.
    uart.send(&frame(1, Request::Info));
    uart.send(&classify(2, 0));
    let mut bad = classify(3, 1);
    bad[500] ^= 0x55;
    uart.send(&bad);
    uart.send(&classify(4, 1));
    uart.send(&classify(5, 2)[..300]);
    uart.silence(10);
    uart.send(&classify(6, 2));
    uart.send(&[0x42; 3000]);
    uart.send(&classify(7, 0));
    uart.send(b"\x13\x37garbage\xA5");
    uart.send(&classify(8, 1));
    let unknown = {
        // A response where a request belongs: a checked frame of the wrong type.
        let mut out = vec![0; 64];
        let n = encode(
            &Message {
                id: Some(9),
                body: Response::Error(ErrorCode::Timeout),
            },
            &mut out,
        )
        .unwrap();
        out.truncate(n);
        out
    };
    uart.send(&unknown);
    uart.send(&frame(10, Request::Classify(&[0; 10])));
    uart.silence(3);
    // One LED toggle per inference (five classifications).
    let led = PinMock::new(&vec![PinTx::toggle(); 5]);
    let model = Int8Model::load(model_bytes()).unwrap();
    let mut arena = vec![0u8; model.arena_len()];
    let (served, written, mut led) = serve(uart, led, &mut arena, 5000);
    led.done();
    let class = |i: usize| Served::Classified(host_classify(img(i)).0 as u8);
    let size = ErrorCode::ImageSize {
        expected: 784,
        got: 10,
    };
    assert_eq!(
        served,
        [
            Served::Info,
            class(0),
            Served::Error(ErrorCode::Corrupt),
            class(1),
            Served::Error(ErrorCode::Timeout),
            class(2),
            Served::Error(ErrorCode::Oversize),
            class(0),
            Served::Error(ErrorCode::Corrupt),
            class(1),
            Served::Error(ErrorCode::Malformed),
            Served::Error(size),
        ]
    );
    let r = replies(&written);
    assert_eq!(r.len(), served.len(), "one reply per request");
    // Replies carry the request's id when the device could read it.
    let ids: Vec<_> = r.iter().map(|m| m.id).collect();
    let (none, some) = (None, Some);
    assert_eq!(
        ids,
        [
            some(1),
            some(2),
            none,
            some(4),
            none,
            some(6),
            none,
            some(7),
            none,
            some(8),
            some(9),
            some(10)
        ]
    );
    let Response::Info(info) = &r[0].body else {
        panic!("{:?}", r[0])
    };
    assert_eq!(*info, Info::of(&model));
    assert_eq!(
        (info.model_crc, info.classes, info.filter.map(|f| f.beta)),
        (model.crc(), 10, Some(4))
    );
    assert_eq!(info.arena_bytes as usize, model.arena_len());
    // A classification reply carries the host's class and exact int8 logits.
    let (class0, logits0) = host_classify(img(0));
    let Response::Classified(Classification { class, logits }) = &r[1].body else {
        panic!("{:?}", r[1])
    };
    assert_eq!(usize::from(*class), class0);
    assert_eq!(logits.as_slice(), logits0.as_slice());
    assert_eq!(
        class0, labels[0] as usize,
        "the model gets the first test digit right"
    );
    assert_eq!(r[2].body, Response::Error(ErrorCode::Corrupt));
    assert_eq!(r[10].body, Response::Error(ErrorCode::Malformed));
    assert_eq!(r[11].body, Response::Error(size));
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
    let good = frame(1, Request::Classify(&images[..784]));
    let want = Served::Classified(host_classify(&images[..784]).0 as u8);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    // The decoder alone: 10,000 streams, biased towards delimiters and bytes of a real
    // frame so that long and nearly valid frames occur; the good frame right after
    // (no silence in between) is always decoded.
    for _ in 0..10_000 {
        let mut d = FrameDecoder::<MAX_FRAME>::new();
        let len = xorshift(&mut seed) % 2048;
        for _ in 0..len {
            let r = xorshift(&mut seed);
            let b = match r % 8 {
                0 => 0,
                1 => good[(r >> 8) as usize % good.len()],
                _ => (r >> 8) as u8,
            };
            let _ = d.push::<Request>(b);
        }
        let events: Vec<String> = good
            .iter()
            .filter_map(|&b| d.push::<Request>(b).map(|e| format!("{e:?}")))
            .collect();
        assert!(events.len() <= 2, "{events:?}");
        assert!(
            events
                .last()
                .is_some_and(|e| e.starts_with("Ok(Message { id: Some(1), body: Classify(")),
            "{events:?}"
        );
    }
    // The whole device on a sample of streams: whatever came before, the good frame
    // right after is classified (and toggles the LED exactly once).
    let model = Int8Model::load(model_bytes()).unwrap();
    let mut arena = vec![0u8; model.arena_len()];
    for _ in 0..50 {
        let mut uart = ScriptedUart::default();
        let n = xorshift(&mut seed) % 3000;
        let stream: Vec<u8> = (0..n).map(|_| xorshift(&mut seed) as u8).collect();
        uart.send(&stream);
        uart.send(&good);
        uart.silence(1);
        let led = PinMock::new(&[PinTx::toggle()]);
        let (served, _, mut led) = serve(uart, led, &mut arena, 1000);
        led.done();
        assert_eq!(served.last(), Some(&want), "{served:?}");
    }
}
