//! Host side of the device protocol (`spartan_core::protocol`, docs/protocol.md): talk
//! to a Spartan device — a board on a serial port, or the firmware under QEMU — where
//! every read and write has a deadline and a lost or broken reply is retried a bounded
//! number of times.
//!
//! A [`Client`] sends each request with a fresh id and accepts only a reply carrying
//! one of the ids it used for that request, so a late reply to an earlier attempt is
//! never taken for the current one. Within [`Client::timeout`] it sends a request at
//! most [`Client::attempts`] times: again at once after a corrupt frame or a transient
//! error reply (the reply may have been ours), again when an attempt's share of the
//! timeout passes in silence. A device that refuses a request for good (wrong image
//! size, unknown request) fails it at once; a link that breaks fails the run.

use serialport::{ClearBuffer, DataBits, FlowControl, Parity, SerialPort, StopBits};
use spartan_core::protocol::{
    encode, Classification, ErrorCode, FrameDecoder, FrameError, Info, Message, Request, Response,
    MAX_FRAME,
};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Default wait for one answer, retries included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of times one request may be sent.
pub const DEFAULT_ATTEMPTS: u32 = 4;
/// How often the handshake repeats its request while a device boots (bytes sent before
/// the firmware listens are lost).
pub const HANDSHAKE_INTERVAL: Duration = Duration::from_millis(250);
/// The firmware's baud rate.
pub const DEFAULT_BAUD: u32 = 115_200;

/// Why talking to the device failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The serial port could not be opened or configured.
    #[error("cannot open serial port {path}")]
    Open {
        /// The port.
        path: String,
        /// Why.
        source: serialport::Error,
    },
    /// The link broke (device unplugged, reset, or its end closed).
    #[error("the link to the device broke")]
    Link(#[from] io::Error),
    /// No valid answer within the timeout.
    #[error("no valid answer to {request} within {timeout:.1?} ({attempts} sent): {seen}")]
    NoAnswer {
        /// The request.
        request: &'static str,
        /// The time allowed.
        timeout: Duration,
        /// Times the request was sent.
        attempts: u32,
        /// What came back instead.
        seen: Seen,
    },
    /// The device refused the request and would refuse it again.
    #[error("the device refused {request}: {code}")]
    Refused {
        /// The request.
        request: &'static str,
        /// Its reason.
        code: ErrorCode,
    },
    /// A valid reply of the wrong kind.
    #[error("the device answered {request} with {got}")]
    Unexpected {
        /// The request.
        request: &'static str,
        /// What came back.
        got: String,
    },
    /// The request does not fit one frame.
    #[error("{request} does not fit one frame ({bytes} bytes of payload)")]
    TooLarge {
        /// The request.
        request: &'static str,
        /// Its payload.
        bytes: usize,
    },
}

/// One thing a request saw instead of its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// Nothing for this request arrived during an attempt.
    Silence(Duration),
    /// Bytes between delimiters that were not a frame (line noise, lost bytes).
    Broken(FrameError),
    /// The device reported a transient error for this request.
    Error(ErrorCode),
    /// The device reported an error for a frame it could not attribute (noise on the
    /// way to the device).
    StrayError(ErrorCode),
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Observation::Silence(d) => write!(f, "no reply within {:.2} s", d.as_secs_f64()),
            Observation::Broken(e) => write!(f, "{e} from the device"),
            Observation::Error(code) => write!(f, "error reply: {code}"),
            Observation::StrayError(code) => write!(f, "error reply to an unknown frame: {code}"),
        }
    }
}

/// Everything a request saw, in order (repeats of the same description counted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen(pub Vec<Observation>);

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("nothing");
        }
        let described: Vec<String> = self.0.iter().map(|o| o.to_string()).collect();
        let runs: Vec<String> = described
            .chunk_by(|a, b| a == b)
            .map(|run| match run.len() {
                1 => run[0].clone(),
                n => format!("{} (×{n})", run[0]),
            })
            .collect();
        f.write_str(&runs.join("; "))
    }
}

/// What the link went through so far (for the run's report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Requests answered.
    pub answered: u64,
    /// Requests sent again.
    pub resent: u64,
    /// Broken frames received.
    pub broken: u64,
    /// Error replies received (transient ones and ones to unknown frames).
    pub errors: u64,
}

impl fmt::Display for LinkStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests answered, {} resent; {} broken frames and {} error replies received",
            self.answered, self.resent, self.broken, self.errors
        )
    }
}

/// A byte link to a device on which every read and write gives up at a deadline.
pub trait Link {
    /// Sends all of `bytes`, or fails by `deadline`.
    fn send(&mut self, bytes: &[u8], deadline: Instant) -> io::Result<()>;
    /// Reads what arrives before `deadline` into `buf`; `Ok(0)` when nothing did. A
    /// closed link is an error, never `Ok(0)`.
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize>;
}

/// Time left until `deadline`, at least a millisecond (a zero timeout means "wait for
/// ever" to some APIs).
fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// Maps a finished read: timeouts are "nothing yet", end of stream is an error.
fn read_result(r: io::Result<usize>) -> io::Result<usize> {
    match r {
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the device closed the link",
        )),
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

/// A serial port, opened raw (8N1, no flow control) by the client itself.
pub struct SerialLink {
    port: Box<dyn SerialPort>,
}

impl SerialLink {
    /// Opens and configures `path` at `baud`, and drops bytes already waiting.
    pub fn open(path: &str, baud: u32) -> Result<Self, DeviceError> {
        let open_error = |source| DeviceError::Open {
            path: path.to_string(),
            source,
        };
        let port = serialport::new(path, baud)
            .data_bits(DataBits::Eight)
            .parity(Parity::None)
            .stop_bits(StopBits::One)
            .flow_control(FlowControl::None)
            .timeout(Duration::from_millis(100))
            .open()
            .map_err(open_error)?;
        port.clear(ClearBuffer::Input).map_err(open_error)?;
        Ok(SerialLink { port })
    }

    /// Wraps a port opened elsewhere (tests use a pseudo-terminal).
    pub fn new(port: Box<dyn SerialPort>) -> Self {
        SerialLink { port }
    }
}

impl Link for SerialLink {
    fn send(&mut self, bytes: &[u8], deadline: Instant) -> io::Result<()> {
        // Each write waits at most the port's timeout; no flush: draining the output
        // (tcdrain) has no deadline.
        self.port.set_timeout(remaining(deadline))?;
        self.port.write_all(bytes)
    }

    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        if Instant::now() >= deadline {
            return Ok(0);
        }
        self.port.set_timeout(remaining(deadline))?;
        read_result(self.port.read(buf))
    }
}

/// QEMU's UART on a local socket.
impl Link for TcpStream {
    fn send(&mut self, bytes: &[u8], deadline: Instant) -> io::Result<()> {
        self.set_write_timeout(Some(remaining(deadline)))?;
        self.write_all(bytes)
    }

    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        if Instant::now() >= deadline {
            return Ok(0);
        }
        self.set_read_timeout(Some(remaining(deadline)))?;
        read_result(self.read(buf))
    }
}

/// The serial ports of this machine, for `spartan device --list`.
pub fn list_ports() -> serialport::Result<Vec<serialport::SerialPortInfo>> {
    // Without libudev, serialport scans /sys/class/tty, and panics where it is missing
    // (some containers).
    if cfg!(target_os = "linux") && !std::path::Path::new("/sys/class/tty").is_dir() {
        return Ok(Vec::new());
    }
    serialport::available_ports()
}

/// What a request is called in messages.
fn name(request: &Request<'_>) -> &'static str {
    match request {
        Request::Info => "the info request",
        Request::Classify(_) => "the classify request",
    }
}

/// A connection speaking the protocol over a [`Link`].
pub struct Client<L> {
    link: L,
    decoder: FrameDecoder<MAX_FRAME>,
    /// Decoded frames not yet looked at.
    inbox: VecDeque<Result<Message<Response>, FrameError>>,
    out: Vec<u8>,
    next_id: u16,
    stats: LinkStats,
    /// Longest wait for one answer, retries included.
    pub timeout: Duration,
    /// Most times one request is sent (at least 1).
    pub attempts: u32,
}

impl<L: Link> Client<L> {
    /// A client with [`DEFAULT_TIMEOUT`] and [`DEFAULT_ATTEMPTS`].
    pub fn new(link: L) -> Self {
        Client {
            link,
            decoder: FrameDecoder::new(),
            inbox: VecDeque::new(),
            out: vec![0; MAX_FRAME + 2],
            next_id: 1,
            stats: LinkStats::default(),
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
        }
    }

    /// Asks for the model info every [`HANDSHAKE_INTERVAL`] until the device answers
    /// or the timeout passes (a device just booted may not have heard the first ones).
    pub fn handshake(&mut self) -> Result<Info, DeviceError> {
        let tries = (self.timeout.as_millis() / HANDSHAKE_INTERVAL.as_millis()).max(1);
        let tries = u32::try_from(tries).unwrap_or(u32::MAX).max(self.attempts);
        match self.exchange(Request::Info, tries)? {
            Response::Info(info) => Ok(info),
            other => Err(unexpected(&Request::Info, &other)),
        }
    }

    /// Asks the device to describe its model.
    pub fn info(&mut self) -> Result<Info, DeviceError> {
        match self.exchange(Request::Info, self.attempts)? {
            Response::Info(info) => Ok(info),
            other => Err(unexpected(&Request::Info, &other)),
        }
    }

    /// Classifies one image of raw pixels.
    pub fn classify(&mut self, pixels: &[u8]) -> Result<Classification, DeviceError> {
        let request = Request::Classify(pixels);
        match self.exchange(request, self.attempts)? {
            Response::Classified(c) => Ok(c),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// What the link went through so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// The underlying link.
    pub fn into_inner(self) -> L {
        self.link
    }

    /// Sends `request` up to `attempts` times within the timeout; returns the first
    /// valid reply to any of them.
    fn exchange(&mut self, request: Request<'_>, attempts: u32) -> Result<Response, DeviceError> {
        let attempts = attempts.max(1);
        let start = Instant::now();
        let deadline = start + self.timeout;
        let share = self.timeout / attempts;
        let mut ids = Vec::new();
        let mut seen = Vec::new();
        for attempt in 1..=attempts {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if attempt > 1 {
                self.stats.resent += 1;
            }
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            ids.push(id);
            let n = encode(
                &Message {
                    id: Some(id),
                    body: request,
                },
                &mut self.out,
            )
            .map_err(|_| DeviceError::TooLarge {
                request: name(&request),
                bytes: match request {
                    Request::Info => 0,
                    Request::Classify(p) => p.len(),
                },
            })?;
            self.link.send(&self.out[..n], deadline)?;
            let until = if attempt == attempts {
                deadline
            } else {
                (now + share).min(deadline)
            };
            match self.await_reply(&request, &ids, until, &mut seen)? {
                Some(response) => {
                    self.stats.answered += 1;
                    return Ok(response);
                }
                None => continue,
            }
        }
        Err(DeviceError::NoAnswer {
            request: name(&request),
            timeout: self.timeout,
            attempts: ids.len() as u32,
            seen: Seen(seen),
        })
    }

    /// Reads until a reply to one of `ids` arrives (`Some`), or this attempt should be
    /// repeated (`None`: silence until `until`, a broken frame, a transient error).
    fn await_reply(
        &mut self,
        request: &Request<'_>,
        ids: &[u16],
        until: Instant,
        seen: &mut Vec<Observation>,
    ) -> Result<Option<Response>, DeviceError> {
        let started = Instant::now();
        let mut broken = false;
        let mut buf = [0u8; 256];
        loop {
            while let Some(item) = self.inbox.pop_front() {
                match item {
                    Ok(Message { id: Some(id), body }) if ids.contains(&id) => match body {
                        Response::Error(code) if code.is_transient() => {
                            self.stats.errors += 1;
                            seen.push(Observation::Error(code));
                            return Ok(None);
                        }
                        Response::Error(code) => {
                            return Err(DeviceError::Refused {
                                request: name(request),
                                code,
                            })
                        }
                        reply => return Ok(Some(reply)),
                    },
                    Ok(Message {
                        body: Response::Error(code),
                        ..
                    }) => {
                        self.stats.errors += 1;
                        seen.push(Observation::StrayError(code));
                    }
                    // A late reply to an earlier request: already answered or given up.
                    Ok(_) => {}
                    Err(e) => {
                        self.stats.broken += 1;
                        seen.push(Observation::Broken(e));
                        broken = true;
                    }
                }
            }
            // Everything received is looked at: a broken frame with no good reply
            // after it may have been this reply, so ask again now.
            if broken {
                return Ok(None);
            }
            if Instant::now() >= until {
                seen.push(Observation::Silence(until - started));
                return Ok(None);
            }
            let n = self.link.recv(&mut buf, until)?;
            for &b in &buf[..n] {
                if let Some(item) = self.decoder.push::<Response>(b) {
                    self.inbox.push_back(item);
                }
            }
        }
    }
}

fn unexpected(request: &Request<'_>, got: &Response) -> DeviceError {
    let got = match got {
        Response::Info(_) => "an info reply".to_string(),
        Response::Classified(_) => "a classification".to_string(),
        Response::Error(code) => format!("an error ({code})"),
    };
    DeviceError::Unexpected {
        request: name(request),
        got,
    }
}
