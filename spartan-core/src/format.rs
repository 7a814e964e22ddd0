//! The model file container (docs/format.md): a fixed header, a postcard body, a CRC-32.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "SPRT"
//! 4       2     format version, u16 little-endian (2; f32 files of version 1 still load)
//! 6       1     kind: 0 = f32, 1 = int8
//! 7       1     reserved, 0
//! 8       4     body length in bytes, u32 little-endian
//! 12      n     body: postcard-encoded ModelBody
//! 12+n    4     CRC-32 (IEEE, as zlib) of bytes 0..12+n, u32 little-endian
//! ```
//!
//! Parsing borrows tensor bytes straight from the input slice, so firmware reads its
//! weights from flash without copying them; [`ModelReader`] decodes the tensors one at a
//! time, so loading needs no table of every tensor on a device's small stack.

use crate::error::{Error, Result};
use crate::spec::ArchSpec;
use serde::{Deserialize, Serialize};

/// First four bytes of every model file.
pub const MAGIC: [u8; 4] = *b"SPRT";
/// The format version this build writes and reads. Version 2 stores int8 weights with
/// the reduction axis innermost (docs/format.md); f32 bodies are the same in versions 1
/// and 2, so f32 files of version 1 still load. Int8 files of version 1 are refused.
pub const FORMAT_VERSION: u16 = 2;
/// Bytes before the body.
pub const HEADER_LEN: usize = 12;
/// Bytes after the body (the CRC).
pub const TRAILER_LEN: usize = 4;
/// Most tensors one model may hold.
pub const MAX_TENSORS: usize = 64;

/// The CRC-32 of the model file and of protocol frames.
pub(crate) const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// CRC-32 (IEEE 802.3, the zlib/PNG one) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    CRC32.checksum(bytes)
}

/// What the tensors of a model hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ModelKind {
    /// Float weights: the reference model the trainer writes.
    F32 = 0,
    /// Quantized weights, bit tables and requantisation constants.
    Int8 = 1,
}

impl ModelKind {
    /// Decodes the kind byte.
    pub fn from_byte(b: u8) -> Result<Self> {
        match b {
            0 => Ok(ModelKind::F32),
            1 => Ok(ModelKind::Int8),
            other => Err(Error::UnknownKind(other)),
        }
    }

    /// Human name.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::F32 => "f32",
            ModelKind::Int8 => "int8",
        }
    }
}

/// Element type of a stored tensor; all are little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DType {
    /// IEEE 754 single precision.
    F32,
    /// Signed byte.
    I8,
    /// Unsigned byte.
    U8,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 16-bit integer.
    U16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::U16 => 2,
            DType::I8 | DType::U8 => 1,
        }
    }
}

/// A tensor borrowed from the file: type, dimensions (outermost first) and raw bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorRef<'a> {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first.
    pub dims: heapless::Vec<u32, 4>,
    /// Little-endian element bytes.
    pub data: &'a [u8],
}

impl<'a> TensorRef<'a> {
    /// A tensor over `data` with the given dims (more than 4 dims are truncated away,
    /// which validation then reports as a shape mismatch).
    pub fn new(dtype: DType, dims: &[u32], data: &'a [u8]) -> Self {
        let mut d = heapless::Vec::new();
        for &x in dims.iter().take(4) {
            let _ = d.push(x);
        }
        TensorRef {
            dtype,
            dims: d,
            data,
        }
    }

    /// Checks that dtype, dims and byte length are exactly as expected.
    pub fn expect(&self, index: usize, dtype: DType, dims: &[u32]) -> Result<()> {
        let mismatch = |reason| Error::TensorMismatch {
            tensor: index,
            reason,
        };
        if self.dtype != dtype {
            return Err(mismatch("wrong element type"));
        }
        if self.dims.as_slice() != dims {
            return Err(mismatch("dimensions differ from the spec"));
        }
        let elements = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
            .ok_or(mismatch("dimensions overflow"))?;
        let bytes = elements
            .checked_mul(dtype.size())
            .ok_or(mismatch("dimensions overflow"))?;
        if self.data.len() != bytes {
            return Err(mismatch("byte length differs from its dimensions"));
        }
        Ok(())
    }
}

/// The decoded body: the architecture and its tensors in spec order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelBody<'a> {
    /// What the network is.
    pub spec: ArchSpec,
    /// What it learned, in layer order (weight before bias), then kind-specific extras.
    #[serde(borrow)]
    pub tensors: heapless::Vec<TensorRef<'a>, MAX_TENSORS>,
}

/// A parsed (container-checked, not yet semantically validated) model file.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFile<'a> {
    /// Tensor kind.
    pub kind: ModelKind,
    /// Format version of the file.
    pub version: u16,
    /// The body.
    pub body: ModelBody<'a>,
    /// The file's CRC-32, a convenient model identity.
    pub crc: u32,
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A container-checked model file whose spec and tensors are decoded when asked for, the
/// tensors one at a time: what firmware loads with (no table of every tensor, no copy of
/// the spec, on its small stack).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelReader<'a> {
    /// Tensor kind.
    pub kind: ModelKind,
    /// Format version of the file.
    pub version: u16,
    /// The file's CRC-32.
    pub crc: u32,
    /// The postcard body: the spec, then the tensor sequence.
    body: &'a [u8],
    /// Where the tensor sequence (count, then the tensors) starts in `body`.
    tensors_at: usize,
    count: usize,
}

impl<'a> ModelReader<'a> {
    /// Checks magic, version, kind, length and CRC, and that the body decodes: the spec,
    /// then at most [`MAX_TENSORS`] tensors, nothing after them. Tensor contents are
    /// checked later by the model that interprets them.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < HEADER_LEN + TRAILER_LEN {
            if bytes.len() >= 4 && bytes[..4] != MAGIC {
                return Err(Error::BadMagic);
            }
            return Err(Error::Truncated {
                needed: HEADER_LEN + TRAILER_LEN,
                got: bytes.len(),
            });
        }
        if bytes[..4] != MAGIC {
            return Err(Error::BadMagic);
        }
        let version = read_u16(bytes, 4);
        let kind = ModelKind::from_byte(bytes[6])?;
        if !(version == FORMAT_VERSION || (version == 1 && kind == ModelKind::F32)) {
            return Err(Error::UnsupportedVersion(version));
        }
        if bytes[7] != 0 {
            return Err(Error::Decode);
        }
        let body_len = read_u32(bytes, 8) as usize;
        let total = HEADER_LEN
            .checked_add(body_len)
            .and_then(|n| n.checked_add(TRAILER_LEN))
            .ok_or(Error::Decode)?;
        if bytes.len() < total {
            return Err(Error::Truncated {
                needed: total,
                got: bytes.len(),
            });
        }
        if bytes.len() > total {
            return Err(Error::TrailingBytes {
                extra: bytes.len() - total,
            });
        }
        let content = &bytes[..HEADER_LEN + body_len];
        let stored = read_u32(bytes, HEADER_LEN + body_len);
        let computed = crc32(content);
        if stored != computed {
            return Err(Error::BadChecksum { stored, computed });
        }
        let body = &content[HEADER_LEN..];
        let tensors = skip_spec(body)?;
        let tensors_at = body.len() - tensors.len();
        let (count, mut rest): (usize, &[u8]) =
            postcard::take_from_bytes(tensors).map_err(|_| Error::Decode)?;
        if count > MAX_TENSORS {
            return Err(Error::Decode);
        }
        for _ in 0..count {
            let (_, r): (TensorRef<'_>, &[u8]) =
                postcard::take_from_bytes(rest).map_err(|_| Error::Decode)?;
            rest = r;
        }
        if !rest.is_empty() {
            return Err(Error::Decode);
        }
        Ok(ModelReader {
            kind,
            version,
            crc: stored,
            body,
            tensors_at,
            count,
        })
    }

    /// The architecture (decoded again at each call; `parse` checked that it decodes).
    pub fn spec(&self) -> Result<ArchSpec> {
        postcard::take_from_bytes(self.body)
            .map(|(spec, _)| spec)
            .map_err(|_| Error::Decode)
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.count
    }

    /// The tensors in file order, decoded as they are visited.
    pub fn tensors(&self) -> Tensors<'a> {
        // `parse` decoded the count and every tensor, so neither step fails here.
        let rest = postcard::take_from_bytes::<usize>(&self.body[self.tensors_at..])
            .map(|(_, rest)| rest)
            .unwrap_or(&[]);
        Tensors {
            rest,
            remaining: self.count,
        }
    }
}

/// The bytes after the spec at the start of a body (the spec is decoded in its own
/// frame and dropped, so callers keep no copy of it).
#[inline(never)]
fn skip_spec(body: &[u8]) -> Result<&[u8]> {
    postcard::take_from_bytes::<ArchSpec>(body)
        .map(|(_, rest)| rest)
        .map_err(|_| Error::Decode)
}

/// The tensors of a [`ModelReader`], decoded one at a time.
#[derive(Clone, Debug)]
pub struct Tensors<'a> {
    rest: &'a [u8],
    remaining: usize,
}

impl<'a> Iterator for Tensors<'a> {
    type Item = TensorRef<'a>;

    fn next(&mut self) -> Option<TensorRef<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let (t, rest) = postcard::take_from_bytes::<TensorRef<'a>>(self.rest).ok()?;
        self.rest = rest;
        self.remaining -= 1;
        Some(t)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<'a> ModelFile<'a> {
    /// Checks magic, version, kind, length and CRC, then decodes the body. Tensor
    /// contents are checked later by the model that interprets them.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let reader = ModelReader::parse(bytes)?;
        let mut tensors = heapless::Vec::new();
        for t in reader.tensors() {
            // `parse` bounded the count by the capacity.
            tensors.push(t).map_err(|_| Error::Decode)?;
        }
        Ok(ModelFile {
            kind: reader.kind,
            version: reader.version,
            body: ModelBody {
                spec: reader.spec()?,
                tensors,
            },
            crc: reader.crc,
        })
    }
}

/// Encodes a model file into `out`, returning the number of bytes written.
///
/// Needs no allocator, so a device could re-emit a model; host tools use [`to_vec`].
pub fn write_into(kind: ModelKind, body: &ModelBody<'_>, out: &mut [u8]) -> Result<usize> {
    if out.len() < HEADER_LEN + TRAILER_LEN {
        return Err(Error::OutputFull);
    }
    let body_len = postcard::to_slice(body, &mut out[HEADER_LEN..])
        .map_err(|_| Error::OutputFull)?
        .len();
    let body_len_u32 = u32::try_from(body_len).map_err(|_| Error::OutputFull)?;
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[6] = kind as u8;
    out[7] = 0;
    out[8..12].copy_from_slice(&body_len_u32.to_le_bytes());
    let end = HEADER_LEN + body_len;
    if out.len() < end + TRAILER_LEN {
        return Err(Error::OutputFull);
    }
    let crc = crc32(&out[..end]);
    out[end..end + TRAILER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(end + TRAILER_LEN)
}

/// Encodes a model file into a new vector.
#[cfg(feature = "alloc")]
pub fn to_vec(kind: ModelKind, body: &ModelBody<'_>) -> alloc::vec::Vec<u8> {
    // Serialising into a Vec cannot fail for these types.
    let encoded = postcard::to_allocvec(body).unwrap_or_default();
    let mut out = alloc::vec::Vec::with_capacity(HEADER_LEN + encoded.len() + TRAILER_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&encoded);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}
