//! A fake Spartan device on a pseudo-terminal, for the host client's tests: a thread
//! speaking `spartan_core::protocol` with the core's int8 model (the committed
//! candidate-c), which can misbehave in the ways real serial links do.
#![allow(dead_code)] // each test file uses part of it

use serialport::{SerialPort, TTYPort};
use spartan_core::int8::Int8Model;
use spartan_core::protocol::{
    encode, Classification, ErrorCode, FrameDecoder, Info, Message, Request, Response, MAX_FRAME,
    MAX_RESPONSE_FRAME,
};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The committed int8 model (the one the firmware embeds).
pub fn model_bytes() -> &'static [u8] {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/candidate-c.int8.spartan"
    );
    Box::leak(
        std::fs::read(path)
            .expect("models/candidate-c.int8.spartan")
            .into_boxed_slice(),
    )
}

pub fn model_path() -> &'static str {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/candidate-c.int8.spartan"
    )
}

/// The host's int8 answer for `image`.
pub fn host_classify(image: &[u8]) -> Classification {
    let m = Int8Model::load(model_bytes()).unwrap();
    let mut arena = vec![0u8; m.arena_len()];
    let mut logits = vec![0i8; m.classes()];
    let class = m.infer(image, &mut arena, &mut logits).unwrap();
    Classification {
        class: class as u8,
        logits: heapless::Vec::from_slice(&logits).unwrap(),
    }
}

/// The first `n` test images of the embedded MNIST subset.
pub fn test_images(n: usize) -> Vec<Vec<u8>> {
    let test = spartan_train::data::load(None).unwrap().test.take(n);
    (0..n).map(|i| test.image(i).to_vec()).collect()
}

/// How the fake device misbehaves (all off: a healthy device).
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Reads everything, answers nothing.
    pub silent: bool,
    /// Random bytes (zeros among them) before every reply.
    pub noise: bool,
    /// A 0xA5 right before every reply's frame (no delimiter in between).
    pub stray_a5: bool,
    /// Every n-th request is answered with a transient error carrying its id.
    pub error_every: Option<usize>,
    /// Every n-th request is lost on the way in: the device answers an error for an
    /// unknown frame (no id), as after line noise, and nothing else.
    pub lose_every: Option<usize>,
    /// Every n-th reply has a byte changed on the way out.
    pub corrupt_every: Option<usize>,
    /// Every classify request is answered with this error.
    pub always: Option<ErrorCode>,
    /// The link closes after this many classifications.
    pub die_after: Option<usize>,
}

/// What the fake device did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Log {
    /// Good request frames received.
    pub requests: usize,
    /// Classifications sent.
    pub classified: usize,
}

/// A fake device serving the master side of a pseudo-terminal; the slave side is what
/// the client opens. Stops (and is joined) when dropped.
pub struct FakeDevice {
    /// The pseudo-terminal's path for the client (`/dev/pts/N`).
    pub path: String,
    /// The slave end, held open so the master never sees a hang-up before the client
    /// opens it; tests that talk in-process take it.
    pub slave: Option<TTYPort>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Log>>,
}

impl FakeDevice {
    pub fn spawn(behaviour: Behaviour) -> Self {
        let (master, slave) = TTYPort::pair().expect("a pseudo-terminal");
        let path = slave.name().expect("the pty's name");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || serve(master, behaviour, &flag));
        FakeDevice {
            path,
            slave: Some(slave),
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the device and returns what it did.
    pub fn stop(mut self) -> Log {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("fake device thread")
    }
}

impl Drop for FakeDevice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// xorshift64 for the noise.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn frame(id: Option<u16>, body: Response) -> Vec<u8> {
    let mut out = vec![0u8; MAX_RESPONSE_FRAME];
    let n = encode(&Message { id, body }, &mut out).unwrap();
    out.truncate(n);
    out
}

fn serve(mut port: TTYPort, b: Behaviour, stop: &AtomicBool) -> Log {
    let model = Int8Model::load(model_bytes()).unwrap();
    let info = Info::of(&model);
    let mut arena = vec![0u8; model.arena_len()];
    let mut decoder = FrameDecoder::<MAX_FRAME>::new();
    let mut log = Log::default();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = [0u8; 1024];
    let every = |n: Option<usize>, k: usize| n.is_some_and(|n| k.is_multiple_of(n));
    // No test runs this long: a forgotten device still ends.
    let end = Instant::now() + Duration::from_secs(120);
    port.set_timeout(Duration::from_millis(20)).unwrap();
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let n = match port.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => break,
        };
        for &byte in &buf[..n] {
            let Some(Ok(Message { id, body })) = decoder.push::<Request>(byte) else {
                continue;
            };
            log.requests += 1;
            let k = log.requests;
            if b.silent {
                continue;
            }
            let reply = if every(b.lose_every, k) {
                frame(None, Response::Error(ErrorCode::Corrupt))
            } else if every(b.error_every, k) {
                frame(id, Response::Error(ErrorCode::Corrupt))
            } else {
                let body = match body {
                    Request::Info => Response::Info(info),
                    Request::Classify(_) if b.always.is_some() => {
                        Response::Error(b.always.unwrap())
                    }
                    Request::Classify(image) => {
                        let mut logits = [0i8; 10];
                        let class = model.infer(image, &mut arena, &mut logits).unwrap();
                        log.classified += 1;
                        Response::Classified(Classification {
                            class: class as u8,
                            logits: heapless::Vec::from_slice(&logits).unwrap(),
                        })
                    }
                };
                frame(id, body)
            };
            let mut wire = Vec::new();
            if b.noise {
                for _ in 0..1 + next(&mut seed) % 40 {
                    let r = next(&mut seed);
                    wire.push(if r.is_multiple_of(5) {
                        0
                    } else {
                        (r >> 8) as u8
                    });
                }
            }
            if b.stray_a5 {
                wire.push(0xA5);
            }
            let start = wire.len();
            wire.extend(reply);
            if every(b.corrupt_every, k) {
                let i = start + 2 + (next(&mut seed) as usize % (wire.len() - start - 3));
                wire[i] ^= 0x5A;
            }
            if port.write_all(&wire).is_err() {
                return log;
            }
            if b.die_after.is_some_and(|d| log.classified >= d) {
                return log; // drops the master: the client sees a hang-up
            }
        }
    }
    log
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit`, so no test
/// can hang. Returns `f`'s result and how long it took.
pub fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> (T, Duration) {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => (v, start.elapsed()),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("no result within {limit:?}: something waits without a deadline")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the test's thread panicked (above)"),
    }
}
