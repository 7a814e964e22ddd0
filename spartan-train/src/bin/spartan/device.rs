//! Host side of the device protocol: talk to a Spartan device (a board on a serial
//! port, or the firmware under QEMU) and measure it on test images.

use spartan_mcu::driver::Info;
use spartan_mcu::protocol::{
    encode, Decoder, ErrorCode, Event, CMD_CLASSIFY, CMD_ERROR, CMD_INFO, REPLY,
};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Why talking to the device failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The link failed.
    #[error("serial link: {0}")]
    Io(#[from] std::io::Error),
    /// No reply in time.
    #[error("no reply from the device within {0:?}")]
    Timeout(Duration),
    /// The device answered with an error frame.
    #[error("device error: {0:?} (request {1:#04x})")]
    Device(Option<ErrorCode>, u8),
    /// A reply that makes no sense.
    #[error("unexpected reply: command {cmd:#04x}, {len} bytes")]
    Unexpected {
        /// Reply command.
        cmd: u8,
        /// Payload length.
        len: usize,
    },
}

/// A connection speaking the framed protocol over any byte stream.
pub struct Client<S> {
    stream: S,
    decoder: Decoder,
    /// How long to wait for a reply.
    pub timeout: Duration,
}

impl<S: Read + Write> Client<S> {
    /// Wraps a stream whose reads return (possibly 0 bytes or a timeout error) rather
    /// than block forever, so replies can time out.
    pub fn new(stream: S) -> Self {
        Client {
            stream,
            decoder: Decoder::new(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Sends one request and waits for its reply frame.
    pub fn request(&mut self, cmd: u8, payload: &[u8]) -> Result<(u8, Vec<u8>), DeviceError> {
        let mut frame = vec![0u8; payload.len() + 6];
        let n = encode(cmd, payload, &mut frame).ok_or(DeviceError::Unexpected {
            cmd,
            len: payload.len(),
        })?;
        self.stream.write_all(&frame[..n])?;
        self.stream.flush()?;
        let start = Instant::now();
        let mut buf = [0u8; 256];
        loop {
            if start.elapsed() > self.timeout {
                let _ = self.decoder.timeout();
                return Err(DeviceError::Timeout(self.timeout));
            }
            let got = match self.stream.read(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    0
                }
                Err(e) => return Err(e.into()),
            };
            for &b in &buf[..got] {
                match self.decoder.push(b) {
                    Some(Event::Frame {
                        cmd: CMD_ERROR,
                        payload,
                    }) => {
                        let code = payload.first().and_then(|&c| ErrorCode::from_byte(c));
                        return Err(DeviceError::Device(
                            code,
                            payload.get(1).copied().unwrap_or(0),
                        ));
                    }
                    Some(Event::Frame { cmd: c, payload }) if c == cmd | REPLY => {
                        return Ok((c, payload.to_vec()))
                    }
                    // A late reply to an earlier request (e.g. a retried handshake).
                    Some(Event::Frame { .. }) => {}
                    // Noise on the line towards the host: keep listening.
                    Some(Event::Error(_)) | None => {}
                }
            }
        }
    }

    /// Asks the device to describe its model.
    pub fn info(&mut self) -> Result<Info, DeviceError> {
        let (cmd, payload) = self.request(CMD_INFO, &[])?;
        match Info::from_bytes(&payload) {
            Some(info) if cmd == CMD_INFO | REPLY => Ok(info),
            _ => Err(DeviceError::Unexpected {
                cmd,
                len: payload.len(),
            }),
        }
    }

    /// Classifies one image of raw pixels: the class and the `i8` logits.
    pub fn classify(&mut self, pixels: &[u8]) -> Result<(u8, Vec<i8>), DeviceError> {
        let (cmd, payload) = self.request(CMD_CLASSIFY, pixels)?;
        match payload.split_first() {
            Some((&class, logits)) if cmd == CMD_CLASSIFY | REPLY => {
                Ok((class, logits.iter().map(|&b| b as i8).collect()))
            }
            _ => Err(DeviceError::Unexpected {
                cmd,
                len: payload.len(),
            }),
        }
    }

    /// Reads and drops whatever arrives until the line has been quiet for `quiet`
    /// (late replies to retried requests).
    pub fn drain(&mut self, quiet: Duration) -> Result<(), DeviceError> {
        let mut buf = [0u8; 256];
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            match self.stream.read(&mut buf) {
                Ok(0) => std::thread::sleep(Duration::from_millis(5)),
                Ok(_) => last = Instant::now(),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.decoder = Decoder::new();
        Ok(())
    }

    /// The underlying stream.
    pub fn into_inner(self) -> S {
        self.stream
    }
}
