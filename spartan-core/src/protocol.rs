//! The serial protocol between a host and a Spartan device, defined once for both sides
//! (docs/protocol.md).
//!
//! A [`Message`] pairs a body with the id of the request it belongs to. Requests
//! ([`Request`]) and responses ([`Response`]) are typed enums serialised by postcard; a
//! frame on the wire is
//!
//! ```text
//! 0x00 | COBS( postcard(Message) ++ CRC-32(postcard(Message)) as u32 LE ) | 0x00
//! ```
//!
//! COBS removes every zero byte from the frame, so `0x00` only ever delimits: a stray
//! byte or a broken frame is cut off at the next delimiter and costs that frame alone.
//! The leading `0x00` ends whatever noise came before, so the frame after it decodes
//! whatever the line carried earlier. The CRC (CRC-32/ISO-HDLC, as in the model file
//! and zlib) catches bytes changed inside a frame.
//!
//! [`FrameDecoder`] takes bytes one at a time into a fixed buffer (no allocation), and
//! yields a checked, typed message or a [`FrameError`] at each delimiter.
//!
//! ```
//! use spartan_core::protocol::{encode, FrameDecoder, Message, Request, MAX_FRAME};
//!
//! let image = [0u8; 784];
//! let mut wire = [0u8; MAX_FRAME + 2];
//! let n = encode(&Message { id: Some(7), body: Request::Classify(&image) }, &mut wire).unwrap();
//! let mut decoder = FrameDecoder::<MAX_FRAME>::new();
//! let mut got = None;
//! for &b in &wire[..n] {
//!     if let Some(m) = decoder.push::<Request>(b) {
//!         got = Some(m.map(|m| (m.id, matches!(m.body, Request::Classify(p) if p == image))));
//!     }
//! }
//! assert_eq!(got, Some(Ok((Some(7), true))));
//! ```

use crate::filter::FilterSpec;
use crate::format::CRC32;
use crate::int8::Int8Model;
use crate::spec::Shape;
use core::fmt;
use postcard::ser_flavors::{crc::CrcModifier, Cobs, Slice};
use serde::{Deserialize, Serialize};

/// Most classes a classification reply carries.
pub const MAX_CLASSES: usize = 64;
/// Most bytes between two delimiters a decoder must hold for any request: a 28×28
/// image (784 pixels) needs 799; images up to 1,000 pixels fit.
pub const MAX_FRAME: usize = 1024;
/// Bytes [`encode`] needs for any [`Response`], both delimiters included.
pub const MAX_RESPONSE_FRAME: usize = 128;
/// Bytes of CRC at the end of a decoded frame.
pub const CRC_LEN: usize = 4;
/// The frame delimiter.
pub const DELIMITER: u8 = 0x00;

/// A request or response with the id that pairs them.
///
/// The host gives every request a fresh id and the device echoes it, so a late reply to
/// an earlier (retried) request is never mistaken for the current one. An error reply
/// to a frame whose id could not be read carries `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message<B> {
    /// The request id, or `None` when unknown.
    pub id: Option<u16>,
    /// The request or response.
    pub body: B,
}

/// What a host asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// Describe the model being served.
    Info,
    /// Classify one image of raw `u8` pixels (height × width × channels, NHWC).
    Classify(&'a [u8]),
}

/// What a device answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The model being served.
    Info(Info),
    /// The class of an image and the int8 logits it came from.
    Classified(Classification),
    /// The request could not be served.
    Error(ErrorCode),
}

/// The answer to [`Request::Classify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    /// Index of the largest logit.
    pub class: u8,
    /// One int8 logit per class.
    pub logits: heapless::Vec<i8, MAX_CLASSES>,
}

/// The model a device serves: enough for a host to check it runs the model it expects
/// and to send images of the right shape.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Info {
    /// CRC-32 of the model file: the model's identity.
    pub model_crc: u32,
    /// Scratch bytes inference needs.
    pub arena_bytes: u32,
    /// Learned parameters.
    pub parameters: u32,
    /// Input shape (an image has `height × width × channels` pixels).
    pub input: Shape,
    /// Number of classes.
    pub classes: u16,
    /// Number of layers.
    pub layers: u16,
    /// The layer-1 filter, if the network has one.
    pub filter: Option<FilterSpec>,
}

impl Info {
    /// Describes a validated model.
    pub fn of(model: &Int8Model<'_>) -> Self {
        let spec = model.spec();
        let saturate = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Info {
            model_crc: model.crc(),
            arena_bytes: saturate(model.arena_len()),
            parameters: saturate(spec.parameter_count().unwrap_or(0)),
            input: model.shapes()[0],
            classes: u16::try_from(model.classes()).unwrap_or(u16::MAX),
            layers: u16::try_from(spec.layers.len()).unwrap_or(u16::MAX),
            filter: spec.filter(),
        }
    }

    /// Pixels per image.
    pub fn input_len(&self) -> usize {
        self.input.len()
    }
}

/// Why a device could not serve a request (the body of [`Response::Error`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Bytes between delimiters that are not a frame (bad COBS or CRC): line noise.
    Corrupt,
    /// More bytes between delimiters than the device can hold.
    Oversize,
    /// A checked frame that is not a request this device knows (another protocol
    /// version).
    Malformed,
    /// The line went idle in the middle of a frame.
    Timeout,
    /// The image has the wrong number of pixels.
    ImageSize {
        /// Pixels the model takes.
        expected: u32,
        /// Pixels received.
        got: u32,
    },
    /// The model rejected the request.
    Inference,
}

impl ErrorCode {
    /// True for errors of the line (noise, lost bytes), which sending the same request
    /// again may cure; false for a request the device will always refuse.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::Corrupt | ErrorCode::Oversize | ErrorCode::Timeout
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Corrupt => f.write_str("corrupt frame (bad COBS or CRC)"),
            ErrorCode::Oversize => f.write_str("frame too long"),
            ErrorCode::Malformed => f.write_str("not a request this device knows"),
            ErrorCode::Timeout => f.write_str("line idle in the middle of a frame"),
            ErrorCode::ImageSize { expected, got } => {
                write!(f, "image of {got} pixels, the model takes {expected}")
            }
            ErrorCode::Inference => f.write_str("inference failed"),
        }
    }
}

/// Why the bytes between two delimiters are not a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// More bytes than the decoder holds (or, when encoding, than the output holds).
    Oversize,
    /// Not valid COBS, too short for a CRC, or the CRC does not match.
    Corrupt,
    /// A checked frame whose content is not a message of the expected type.
    Malformed {
        /// The request id, when at least that could be read.
        id: Option<u16>,
    },
}

impl FrameError {
    /// The id of the request the broken frame was, when known.
    pub fn id(self) -> Option<u16> {
        match self {
            FrameError::Malformed { id } => id,
            FrameError::Oversize | FrameError::Corrupt => None,
        }
    }
}

impl From<FrameError> for ErrorCode {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Oversize => ErrorCode::Oversize,
            FrameError::Corrupt => ErrorCode::Corrupt,
            FrameError::Malformed { .. } => ErrorCode::Malformed,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Oversize => f.write_str("frame too long"),
            FrameError::Corrupt => f.write_str("corrupt frame (bad COBS or CRC)"),
            FrameError::Malformed { .. } => f.write_str("frame with an unknown message"),
        }
    }
}

impl core::error::Error for FrameError {}

/// Writes `message` as one frame (both delimiters included) into `out`; returns the
/// frame's length, or [`FrameError::Oversize`] if `out` is too small.
pub fn encode<T: Serialize>(message: &T, out: &mut [u8]) -> Result<usize, FrameError> {
    let (first, rest) = out.split_first_mut().ok_or(FrameError::Oversize)?;
    *first = DELIMITER;
    // Bytes flow through the CRC (appended at the end), then COBS (which adds the
    // closing delimiter), then into `rest`.
    let cobs = Cobs::try_new(Slice::new(rest)).map_err(|_| FrameError::Oversize)?;
    let flavor = CrcModifier::new(cobs, CRC32.digest());
    let written = postcard::serialize_with_flavor::<T, _, _>(message, flavor)
        .map_err(|_| FrameError::Oversize)?;
    Ok(1 + written.len())
}

/// Collects bytes up to each delimiter and decodes them, in a fixed buffer of `N`
/// bytes. Empty frames (two delimiters in a row) are skipped silently.
#[derive(Clone, Debug)]
pub struct FrameDecoder<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> Default for FrameDecoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameDecoder<N> {
    /// A decoder waiting for a frame.
    pub const fn new() -> Self {
        FrameDecoder {
            buf: [0; N],
            len: 0,
            overflow: false,
        }
    }

    /// True while bytes of an unfinished frame are held.
    pub fn in_frame(&self) -> bool {
        self.len > 0 || self.overflow
    }

    /// Drops an unfinished frame (the line went idle); true if there was one.
    pub fn abandon(&mut self) -> bool {
        let had = self.in_frame();
        self.len = 0;
        self.overflow = false;
        had
    }

    /// Feeds one byte; at a delimiter that ends a frame, returns the frame's message or
    /// why it is not one.
    pub fn push<'a, B: Deserialize<'a>>(
        &'a mut self,
        byte: u8,
    ) -> Option<Result<Message<B>, FrameError>> {
        if byte != DELIMITER {
            match self.buf.get_mut(self.len) {
                Some(slot) => {
                    *slot = byte;
                    self.len += 1;
                }
                None => self.overflow = true,
            }
            return None;
        }
        let (len, overflow) = (self.len, self.overflow);
        self.len = 0;
        self.overflow = false;
        if overflow {
            return Some(Err(FrameError::Oversize));
        }
        if len == 0 {
            return None;
        }
        Some(decode(&mut self.buf[..len]))
    }
}

/// Decodes one frame's bytes (without delimiters) in place.
fn decode<'a, B: Deserialize<'a>>(frame: &'a mut [u8]) -> Result<Message<B>, FrameError> {
    let n = cobs::decode_in_place(frame).map_err(|_| FrameError::Corrupt)?;
    let body_len = n.checked_sub(CRC_LEN).ok_or(FrameError::Corrupt)?;
    let (body, crc) = frame[..n].split_at(body_len);
    if crc != CRC32.checksum(body).to_le_bytes() {
        return Err(FrameError::Corrupt);
    }
    let malformed = || FrameError::Malformed {
        id: postcard::take_from_bytes::<Option<u16>>(body)
            .ok()
            .and_then(|(id, _)| id),
    };
    match postcard::take_from_bytes::<Message<B>>(body) {
        Ok((message, [])) => Ok(message),
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;
    use crate::filter::FilterKind;
    use crate::test_rng::XorShift;
    use std::vec::Vec;

    fn frame<T: Serialize>(message: &T) -> Vec<u8> {
        let mut out = std::vec![0u8; MAX_FRAME + 2];
        let n = encode(message, &mut out).unwrap();
        out.truncate(n);
        out
    }

    /// Feeds `bytes`, returning every decoded request (`Ok((id, body))`) or error.
    fn requests(
        d: &mut FrameDecoder<MAX_FRAME>,
        bytes: &[u8],
    ) -> Vec<Result<Message<Vec<u8>>, FrameError>> {
        let mut out = Vec::new();
        for &b in bytes {
            if let Some(r) = d.push::<Request>(b) {
                out.push(r.map(|m| Message {
                    id: m.id,
                    body: match m.body {
                        Request::Info => Vec::new(),
                        Request::Classify(p) => p.to_vec(),
                    },
                }));
            }
        }
        out
    }

    // Golden frames, derived independently of this crate by the Python reference in
    // docs/protocol.md (zlib's CRC-32, a textbook COBS encoder) from bodies written out
    // by hand from postcard's wire format: `Some` is 01, `None` 00, integers are varints
    // (300 = ac 02), an enum is its variant index, a byte string or `Vec` is a varint
    // length then the bytes, and an `i8` is one byte.

    /// `Message { id: Some(1), body: Request::Info }`: body 01 01 00.
    const INFO_REQUEST: [u8; 10] = [0x00, 0x03, 0x01, 0x01, 0x05, 0x64, 0x82, 0x98, 0xe7, 0x00];
    /// `Message { id: Some(300), body: Request::Classify(&[0, 255, 7]) }`:
    /// body 01 ac 02 01 03 00 ff 07.
    const CLASSIFY_REQUEST: [u8; 15] = [
        0x00, 0x06, 0x01, 0xac, 0x02, 0x01, 0x03, 0x07, 0xff, 0x07, 0x69, 0x29, 0xde, 0x46, 0x00,
    ];
    /// `Message { id: Some(300), body: Response::Classified(class 1, logits [-1, 2]) }`:
    /// body 01 ac 02 01 01 02 ff 02.
    const CLASSIFIED_REPLY: [u8; 15] = [
        0x00, 0x0d, 0x01, 0xac, 0x02, 0x01, 0x01, 0x02, 0xff, 0x02, 0x03, 0xc1, 0x39, 0x9f, 0x00,
    ];
    /// `Message { id: None, body: Response::Error(ErrorCode::Corrupt) }`: body 00 02 00.
    const CORRUPT_REPLY: [u8; 10] = [0x00, 0x01, 0x02, 0x02, 0x05, 0x90, 0xbb, 0x77, 0xcd, 0x00];

    #[test]
    fn frames_match_their_independently_derived_bytes() {
        let image = [0u8, 255, 7];
        let mut logits = heapless::Vec::new();
        logits.extend_from_slice(&[-1i8, 2]).unwrap();
        let classified = Message {
            id: Some(300),
            body: Response::Classified(Classification { class: 1, logits }),
        };
        let corrupt = Message {
            id: None,
            body: Response::Error(ErrorCode::Corrupt),
        };
        assert_eq!(
            frame(&Message {
                id: Some(1),
                body: Request::Info
            }),
            INFO_REQUEST
        );
        assert_eq!(
            frame(&Message {
                id: Some(300),
                body: Request::Classify(&image)
            }),
            CLASSIFY_REQUEST
        );
        assert_eq!(frame(&classified), CLASSIFIED_REPLY);
        assert_eq!(frame(&corrupt), CORRUPT_REPLY);
        // And they decode back.
        let mut d = FrameDecoder::<MAX_FRAME>::new();
        let mut wire = INFO_REQUEST.to_vec();
        wire.extend(CLASSIFY_REQUEST);
        assert_eq!(
            requests(&mut d, &wire),
            [
                Ok(Message {
                    id: Some(1),
                    body: Vec::new()
                }),
                Ok(Message {
                    id: Some(300),
                    body: image.to_vec()
                })
            ]
        );
        let replies: Vec<_> = CLASSIFIED_REPLY
            .iter()
            .chain(&CORRUPT_REPLY)
            .filter_map(|&b| d.push::<Response>(b))
            .collect();
        assert_eq!(replies, [Ok(classified), Ok(corrupt)]);
    }

    #[test]
    fn noise_and_broken_frames_cost_only_themselves() {
        let image: Vec<u8> = (0..784u32).map(|i| (i * 7) as u8).collect();
        let good = frame(&Message {
            id: Some(9),
            body: Request::Classify(&image),
        });
        assert!(good.len() <= MAX_FRAME + 2, "{}", good.len());
        let ok = || {
            Ok(Message {
                id: Some(9),
                body: image.clone(),
            })
        };
        let mut d = FrameDecoder::<MAX_FRAME>::new();
        assert_eq!(requests(&mut d, &good), [ok()]);
        // A stray 0xA5 right before a frame: it costs itself, not the frame.
        let mut stray = std::vec![0xA5];
        stray.extend(&good);
        assert_eq!(requests(&mut d, &stray), [Err(FrameError::Corrupt), ok()]);
        // A changed byte inside a frame: that frame is lost, the next one is not.
        let mut bad = good.clone();
        bad[400] ^= 0x10;
        bad.extend(&good);
        assert_eq!(requests(&mut d, &bad), [Err(FrameError::Corrupt), ok()]);
        // A frame cut short by a new one.
        let mut cut = good[..500].to_vec();
        cut.extend(&good);
        assert_eq!(requests(&mut d, &cut), [Err(FrameError::Corrupt), ok()]);
        // Too long: one error, then service resumes.
        let mut long = std::vec![0x11; MAX_FRAME + 10];
        long.extend(&good);
        assert_eq!(requests(&mut d, &long), [Err(FrameError::Oversize), ok()]);
        // A checked frame that is not a request: the id still comes back.
        let reply = frame(&Message {
            id: Some(4),
            body: Response::Error(ErrorCode::Timeout),
        });
        assert_eq!(
            requests(&mut d, &reply),
            [Err(FrameError::Malformed { id: Some(4) })]
        );
        // An unfinished frame is abandoned when the line goes idle.
        assert!(requests(&mut d, &good[..300]).is_empty());
        assert!(d.in_frame());
        assert!(d.abandon());
        assert!(!d.abandon());
        assert_eq!(requests(&mut d, &good), [ok()]);
    }

    /// 10,000 random streams (biased towards delimiters and valid-looking bytes) never
    /// panic the decoder, and the good frame right after each one — with no silence in
    /// between — always decodes.
    #[test]
    fn random_streams_never_swallow_the_next_frame() {
        let good = frame(&Message {
            id: Some(2),
            body: Request::Classify(&[1, 2, 3]),
        });
        let mut rng = XorShift(0x5eed_1234);
        let mut d = FrameDecoder::<64>::new();
        for _ in 0..10_000 {
            let len = rng.below(300);
            for _ in 0..len {
                let b = match rng.below(8) {
                    0 => 0,
                    1 => good[1 + rng.below(good.len() - 2)],
                    _ => rng.below(256) as u8,
                };
                let _ = d.push::<Request>(b);
            }
            let got: Vec<_> = good
                .iter()
                .filter_map(|&b| {
                    d.push::<Request>(b)
                        .map(|r| r.map(|m| (m.id, m.body == Request::Classify(&[1, 2, 3]))))
                })
                .collect();
            assert_eq!(got.last(), Some(&Ok((Some(2), true))), "{got:?}");
            assert!(
                got.len() <= 2,
                "at most the noise's own error, then the frame"
            );
        }
    }

    #[test]
    fn every_response_fits_the_response_buffer() {
        let filter = FilterSpec {
            kind: FilterKind::Offset,
            beta: u16::MAX,
            activation: Activation::CosHsnd { sigma: 1.0 },
            sf: 1.0,
        };
        let info = Info {
            model_crc: u32::MAX,
            arena_bytes: u32::MAX,
            parameters: u32::MAX,
            input: Shape::new(u16::MAX, u16::MAX, u16::MAX),
            classes: u16::MAX,
            layers: u16::MAX,
            filter: Some(filter),
        };
        let mut logits = heapless::Vec::new();
        for _ in 0..MAX_CLASSES {
            // -1 and 0x80: bytes that are not zero, the worst case for COBS is none.
            logits.push(-128i8).unwrap();
        }
        let errors = [
            ErrorCode::ImageSize {
                expected: u32::MAX,
                got: u32::MAX,
            },
            ErrorCode::Corrupt,
        ];
        let mut out = [0u8; MAX_RESPONSE_FRAME];
        let bodies = [
            Response::Info(info),
            Response::Classified(Classification {
                class: u8::MAX,
                logits,
            }),
        ]
        .into_iter()
        .chain(errors.map(Response::Error));
        for body in bodies {
            let m = Message {
                id: Some(u16::MAX),
                body,
            };
            let n = encode(&m, &mut out).unwrap();
            let mut d = FrameDecoder::<MAX_RESPONSE_FRAME>::new();
            let got: Vec<_> = out[..n]
                .iter()
                .filter_map(|&b| d.push::<Response>(b))
                .collect();
            assert_eq!(got, [Ok(m)]);
        }
        assert_eq!(
            encode(
                &Message {
                    id: None,
                    body: Request::Classify(&[1; 2000])
                },
                &mut out
            ),
            Err(FrameError::Oversize)
        );
    }
}
