//! IDX files (the MNIST container): raw or gzipped, any dimensions the header states.
//!
//! Format: two zero bytes, a type code (`0x08` = unsigned byte, the only one MNIST
//! uses), the number of dimensions, then each dimension as a big-endian `u32`, then
//! the data in row-major order.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Why an IDX file could not be used; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The gzip stream is corrupt or cut short.
    #[error("{path}: corrupt gzip data: {source}")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The first bytes are not an IDX magic of unsigned bytes.
    #[error(
        "{path}: not an IDX file of unsigned bytes (magic {magic:02x?}; expected [00, 00, 08, n])"
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The four bytes found.
        magic: [u8; 4],
    },
    /// The header ends early or states no dimension.
    #[error("{path}: IDX header truncated or empty ({got} bytes)")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// Bytes available.
        got: usize,
    },
    /// Fewer data bytes than the header promises.
    #[error("{path}: truncated: header promises {expected} data bytes, file has {got}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header promises.
        expected: usize,
        /// Bytes present.
        got: usize,
    },
    /// More data bytes than the header promises.
    #[error("{path}: {extra} bytes after the data the header describes")]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Extra bytes.
        extra: usize,
    },
    /// The dimensions are not the expected rank.
    #[error("{path}: expected {expected} dimensions, header has {got}")]
    Rank {
        /// The file.
        path: PathBuf,
        /// Rank wanted.
        expected: usize,
        /// Rank found.
        got: usize,
    },
}

/// A decoded IDX file of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Row-major data.
    pub data: Vec<u8>,
}

/// Reads a whole file, transparently un-gzipping it when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, IdxError> {
    let raw = std::fs::read(path).map_err(|source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|source| IdxError::Gzip {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses IDX bytes (already un-gzipped); `path` only names the source in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<IdxArray, IdxError> {
    let p = || path.to_path_buf();
    if bytes.len() < 4 {
        return Err(IdxError::BadHeader {
            path: p(),
            got: bytes.len(),
        });
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 {
        return Err(IdxError::BadMagic { path: p(), magic });
    }
    let rank = magic[3] as usize;
    let header = 4 + 4 * rank;
    if rank == 0 || bytes.len() < header {
        return Err(IdxError::BadHeader {
            path: p(),
            got: bytes.len(),
        });
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or(IdxError::BadHeader {
            path: p(),
            got: bytes.len(),
        })?;
    let got = bytes.len() - header;
    if got < expected {
        return Err(IdxError::Truncated {
            path: p(),
            expected,
            got,
        });
    }
    if got > expected {
        return Err(IdxError::TrailingBytes {
            path: p(),
            extra: got - expected,
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Reads and parses an IDX file, checking its rank.
pub fn read(path: &Path, rank: usize) -> Result<IdxArray, IdxError> {
    let array = parse(&read_maybe_gz(path)?, path)?;
    if array.dims.len() != rank {
        return Err(IdxError::Rank {
            path: path.to_path_buf(),
            expected: rank,
            got: array.dims.len(),
        });
    }
    Ok(array)
}

/// Encodes an array as IDX bytes.
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Encodes `f32` values as IDX (type `0x0D`, big-endian floats), e.g. real-valued
/// adversarial images that a byte array cannot hold.
pub fn encode_f32(dims: &[usize], data: &[f32]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x0D, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    for v in data {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

/// Gzips bytes deterministically (no timestamp), for the committed subset.
pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PathBuf {
        PathBuf::from("t.idx")
    }

    #[test]
    fn round_trips_any_shape() {
        let data: Vec<u8> = (0..2 * 3 * 5).map(|i| i as u8).collect();
        let bytes = encode(&[2, 3, 5], &data);
        let a = parse(&bytes, &p()).unwrap();
        assert_eq!(a.dims, [2, 3, 5]);
        assert_eq!(a.data, data);
        let gz = gzip(&bytes).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.gz");
        std::fs::write(&f, gz).unwrap();
        assert_eq!(read(&f, 3).unwrap(), a);
        assert!(matches!(read(&f, 1), Err(IdxError::Rank { .. })));
    }

    #[test]
    fn bad_files_get_named_errors() {
        let bytes = encode(&[4, 2, 2], &[7; 16]);
        for n in 0..bytes.len() {
            let e = parse(&bytes[..n], &p()).unwrap_err();
            assert!(
                matches!(e, IdxError::BadHeader { .. } | IdxError::Truncated { .. }),
                "{n}: {e}"
            );
        }
        let mut bad = bytes.clone();
        bad[2] = 0x0d; // float type
        let e = parse(&bad, &p()).unwrap_err();
        assert!(e.to_string().contains("not an IDX file"), "{e}");
        let mut long = bytes.clone();
        long.push(1);
        assert!(matches!(
            parse(&long, &p()),
            Err(IdxError::TrailingBytes { extra: 1, .. })
        ));
        let e = parse(&bytes[..bytes.len() - 3], &p()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.idx: truncated: header promises 16 data bytes, file has 13"
        );
    }

    #[test]
    fn corrupt_gzip_is_reported() {
        let gz = gzip(&encode(&[100], &[1; 100])).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cut.gz");
        std::fs::write(&f, &gz[..gz.len() / 2]).unwrap();
        let e = read(&f, 1).unwrap_err();
        assert!(matches!(e, IdxError::Gzip { .. }), "{e}");
    }
}
