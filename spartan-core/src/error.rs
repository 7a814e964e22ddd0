//! The one error type of `spartan-core`: every failure is a value, never a panic.

/// Everything that can go wrong when loading a model or running inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The bytes end before a complete header, body or trailer.
    Truncated {
        /// Bytes the file needs.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The file does not start with `SPRT`.
    BadMagic,
    /// The format version is not one this build reads.
    UnsupportedVersion(u16),
    /// The model kind byte is unknown.
    UnknownKind(u8),
    /// Bytes follow the CRC trailer, or the declared length disagrees with the file.
    TrailingBytes {
        /// Extra bytes after the trailer.
        extra: usize,
    },
    /// The stored CRC-32 does not match the content.
    BadChecksum {
        /// CRC stored in the file.
        stored: u32,
        /// CRC computed over the content.
        computed: u32,
    },
    /// The postcard body could not be decoded.
    Decode,
    /// A layer of the spec is inconsistent.
    InvalidSpec {
        /// Index of the offending layer.
        layer: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The number of tensors differs from what the spec needs.
    TensorCount {
        /// Tensors the spec needs.
        expected: usize,
        /// Tensors in the file.
        got: usize,
    },
    /// A tensor's dtype, dimensions or byte length disagree with the spec.
    TensorMismatch {
        /// Index of the tensor in the file.
        tensor: usize,
        /// What disagrees.
        reason: &'static str,
    },
    /// A tensor value is out of its allowed range (NaN, infinite, bad scale, …).
    BadValue {
        /// Index of the tensor in the file.
        tensor: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The model is of a different kind than the caller asked for.
    WrongKind {
        /// Kind the caller asked for.
        expected: u8,
        /// Kind stored in the file.
        got: u8,
    },
    /// An input, output or scratch buffer has the wrong length.
    BufferSize {
        /// Which buffer.
        buffer: &'static str,
        /// Length needed.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// A buffer passed to a writer is too small for the encoded model.
    OutputFull,
}

/// Result alias of `spartan-core`.
pub type Result<T> = core::result::Result<T, Error>;

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Error::Truncated { needed, got } => {
                write!(f, "model file truncated: needs {needed} bytes, has {got}")
            }
            Error::BadMagic => f.write_str("not a Spartan model file (magic is not SPRT)"),
            Error::UnsupportedVersion(v) => write!(f, "unsupported model format version {v}"),
            Error::UnknownKind(k) => write!(f, "unknown model kind {k}"),
            Error::TrailingBytes { extra } => {
                write!(
                    f,
                    "model file has {extra} unexpected bytes after its trailer"
                )
            }
            Error::BadChecksum { stored, computed } => write!(
                f,
                "model file corrupt: CRC-32 is {computed:#010x}, file says {stored:#010x}"
            ),
            Error::Decode => f.write_str("model file body is malformed"),
            Error::InvalidSpec { layer, reason } => {
                write!(f, "invalid architecture at layer {layer}: {reason}")
            }
            Error::TensorCount { expected, got } => {
                write!(f, "model has {got} tensors, its spec needs {expected}")
            }
            Error::TensorMismatch { tensor, reason } => write!(f, "tensor {tensor}: {reason}"),
            Error::BadValue { tensor, reason } => {
                write!(f, "tensor {tensor} has a bad value: {reason}")
            }
            Error::WrongKind { expected, got } => {
                write!(f, "model kind {got} where kind {expected} was expected")
            }
            Error::BufferSize {
                buffer,
                expected,
                got,
            } => write!(f, "{buffer} buffer has {got} elements, needs {expected}"),
            Error::OutputFull => f.write_str("output buffer too small for the model file"),
        }
    }
}

impl core::error::Error for Error {}
