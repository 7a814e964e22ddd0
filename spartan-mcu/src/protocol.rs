//! The framed serial protocol: one frame is
//!
//! ```text
//! 0xA5 | cmd u8 | len u16 LE | payload (len bytes) | CRC-16 u16 LE
//! ```
//!
//! with CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over `cmd`, `len` and the payload.
//! Requests: [`CMD_INFO`] (empty) and [`CMD_CLASSIFY`] (one image of raw pixels).
//! Replies carry `cmd | 0x80`; errors are [`CMD_ERROR`] with an [`ErrorCode`].
//!
//! [`Decoder`] is a byte-at-a-time state machine with a fixed buffer: malformed input
//! yields an error event and the decoder resynchronises on the next sync byte, so a
//! device keeps serving. A frame left incomplete is abandoned by [`Decoder::timeout`].

/// First byte of every frame.
pub const SYNC: u8 = 0xA5;
/// Request: model identity and sizes.
pub const CMD_INFO: u8 = 0x01;
/// Request: classify the image in the payload.
pub const CMD_CLASSIFY: u8 = 0x02;
/// Reply flag: a reply's command is the request's with this bit set.
pub const REPLY: u8 = 0x80;
/// Reply: something went wrong; payload `[code, request cmd]`.
pub const CMD_ERROR: u8 = 0x7F;
/// Largest payload the device accepts (a 28×28 image is 784 bytes).
pub const MAX_PAYLOAD: usize = 1024;
/// Bytes around a payload: sync, cmd, length (2), CRC (2).
pub const OVERHEAD: usize = 6;

/// Why a request could not be served (sent in error replies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    /// The CRC does not match the frame.
    BadCrc = 1,
    /// The declared length exceeds [`MAX_PAYLOAD`].
    Oversize = 2,
    /// The frame stopped before its declared end (line idle too long).
    Timeout = 3,
    /// Bytes outside any frame.
    Garbage = 4,
    /// A well-formed frame with an unknown command.
    UnknownCommand = 5,
    /// A known command with a payload of the wrong size.
    BadLength = 6,
    /// The model rejected the request.
    Inference = 7,
}

impl ErrorCode {
    /// Decodes an error code byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => ErrorCode::BadCrc,
            2 => ErrorCode::Oversize,
            3 => ErrorCode::Timeout,
            4 => ErrorCode::Garbage,
            5 => ErrorCode::UnknownCommand,
            6 => ErrorCode::BadLength,
            7 => ErrorCode::Inference,
            _ => return None,
        })
    }
}

/// CRC-16/CCITT-FALSE of `bytes`, continuing from `crc` (start with `0xFFFF`).
pub fn crc16_update(mut crc: u16, bytes: &[u8]) -> u16 {
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// CRC-16/CCITT-FALSE of `bytes`.
pub fn crc16(bytes: &[u8]) -> u16 {
    crc16_update(0xFFFF, bytes)
}

/// Writes a frame into `out`; returns its length, or `None` if `out` is too small or
/// the payload exceeds `u16`.
pub fn encode(cmd: u8, payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let len = u16::try_from(payload.len()).ok()?;
    let total = payload.len() + OVERHEAD;
    let frame = out.get_mut(..total)?;
    frame[0] = SYNC;
    frame[1] = cmd;
    frame[2..4].copy_from_slice(&len.to_le_bytes());
    frame[4..4 + payload.len()].copy_from_slice(payload);
    let crc = crc16(&frame[1..4 + payload.len()]);
    frame[4 + payload.len()..].copy_from_slice(&crc.to_le_bytes());
    Some(total)
}

/// What the decoder saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'b> {
    /// A complete, checked frame.
    Frame {
        /// Its command.
        cmd: u8,
        /// Its payload (borrowed from the decoder until the next byte).
        payload: &'b [u8],
    },
    /// A malformed frame or stray bytes; the decoder has already resynchronised.
    Error(ErrorCode),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Looking for a sync byte; `reported` once stray bytes got their error.
    Hunt {
        reported: bool,
    },
    Cmd,
    Len0,
    Len1,
    Payload,
    Crc0,
    Crc1,
}

/// Byte-at-a-time frame decoder with a fixed payload buffer.
#[derive(Clone, Debug)]
pub struct Decoder {
    state: State,
    cmd: u8,
    len: usize,
    filled: usize,
    crc_lo: u8,
    buf: [u8; MAX_PAYLOAD],
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder waiting for a frame.
    pub const fn new() -> Self {
        Decoder {
            state: State::Hunt { reported: false },
            cmd: 0,
            len: 0,
            filled: 0,
            crc_lo: 0,
            buf: [0; MAX_PAYLOAD],
        }
    }

    /// True while part of a frame has been received.
    pub fn in_frame(&self) -> bool {
        !matches!(self.state, State::Hunt { .. })
    }

    /// The line went idle: abandons a partial frame (returning a timeout error).
    pub fn timeout(&mut self) -> Option<Event<'_>> {
        if self.in_frame() {
            self.state = State::Hunt { reported: false };
            return Some(Event::Error(ErrorCode::Timeout));
        }
        None
    }

    /// Feeds one byte.
    pub fn push(&mut self, b: u8) -> Option<Event<'_>> {
        match self.state {
            State::Hunt { reported } => {
                if b == SYNC {
                    self.state = State::Cmd;
                } else if !reported {
                    self.state = State::Hunt { reported: true };
                    return Some(Event::Error(ErrorCode::Garbage));
                }
            }
            State::Cmd => {
                self.cmd = b;
                self.state = State::Len0;
            }
            State::Len0 => {
                self.len = usize::from(b);
                self.state = State::Len1;
            }
            State::Len1 => {
                self.len |= usize::from(b) << 8;
                if self.len > MAX_PAYLOAD {
                    // Its payload will be skipped as stray bytes (one error for all).
                    self.state = State::Hunt { reported: true };
                    return Some(Event::Error(ErrorCode::Oversize));
                }
                self.filled = 0;
                self.state = if self.len == 0 {
                    State::Crc0
                } else {
                    State::Payload
                };
            }
            State::Payload => {
                self.buf[self.filled] = b;
                self.filled += 1;
                if self.filled == self.len {
                    self.state = State::Crc0;
                }
            }
            State::Crc0 => {
                self.crc_lo = b;
                self.state = State::Crc1;
            }
            State::Crc1 => {
                self.state = State::Hunt { reported: false };
                let got = u16::from_le_bytes([self.crc_lo, b]);
                let len = (self.len as u16).to_le_bytes();
                let want = crc16_update(crc16(&[self.cmd, len[0], len[1]]), &self.buf[..self.len]);
                if got != want {
                    return Some(Event::Error(ErrorCode::BadCrc));
                }
                return Some(Event::Frame {
                    cmd: self.cmd,
                    payload: &self.buf[..self.len],
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(cmd: u8, payload: &[u8]) -> std::vec::Vec<u8> {
        let mut out = std::vec![0; payload.len() + OVERHEAD];
        let n = encode(cmd, payload, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn events(d: &mut Decoder, bytes: &[u8]) -> std::vec::Vec<std::string::String> {
        let mut v = std::vec::Vec::new();
        for &b in bytes {
            if let Some(e) = d.push(b) {
                v.push(std::format!("{e:?}"));
            }
        }
        v
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        // CRC-16/CCITT-FALSE of "123456789" is 0x29B1 (the catalogue's check value).
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }

    #[test]
    fn frames_round_trip_and_errors_resynchronise() {
        let mut d = Decoder::new();
        let good = frame(CMD_CLASSIFY, &[1, 2, 3]);
        assert_eq!(
            events(&mut d, &good),
            ["Frame { cmd: 2, payload: [1, 2, 3] }"]
        );
        let mut bad = good.clone();
        bad[5] ^= 0xFF;
        assert_eq!(events(&mut d, &bad), ["Error(BadCrc)"]);
        assert_eq!(events(&mut d, &[1, 2, 3, 4]), ["Error(Garbage)"]);
        assert_eq!(
            events(&mut d, &good),
            ["Frame { cmd: 2, payload: [1, 2, 3] }"]
        );
        // Oversize: one error, its payload skipped as stray bytes, then service resumes.
        let mut over = std::vec![SYNC, CMD_CLASSIFY, 0xFF, 0x7F];
        over.extend([9u8; 50]);
        assert_eq!(events(&mut d, &over), ["Error(Oversize)"]);
        assert_eq!(
            events(&mut d, &good),
            ["Frame { cmd: 2, payload: [1, 2, 3] }"]
        );
        // A short frame is abandoned on timeout.
        assert!(events(&mut d, &good[..4]).is_empty());
        assert_eq!(d.timeout(), Some(Event::Error(ErrorCode::Timeout)));
        assert_eq!(d.timeout(), None);
        assert_eq!(
            events(&mut d, &frame(CMD_INFO, &[])),
            ["Frame { cmd: 1, payload: [] }"]
        );
    }
}
