//! IDX files (the MNIST container): raw or gzipped, any dimensions the header states.
//!
//! Format: two zero bytes, a type code (`0x08` = unsigned byte, the only one MNIST
//! uses), the number of dimensions, then each dimension as a big-endian `u32`, then
//! the data in row-major order.
//!
//! Files are read as a stream: the header first, from the decompressed stream of a
//! gzipped file, then exactly the bytes it declares, up to [`MAX_DATA_BYTES`]. A file
//! that declares more is refused before its data is read, so a small gzip bomb costs
//! no memory; gzip files of several members (as `cat a.gz b.gz` makes) are read whole.

use flate2::read::MultiGzDecoder;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// Most data bytes an IDX file may declare: 1 GiB, far above real data sets (MNIST's
/// training images are 47 MB), so that a corrupt or hostile header cannot ask for more.
pub const MAX_DATA_BYTES: u64 = 1 << 30;

/// Why an IDX file could not be used; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The gzip stream is corrupt or cut short.
    #[error("{path}: corrupt gzip data")]
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
    /// The header declares more data than any data set has.
    #[error(
        "{path}: the header declares {dims} bytes of data, more than the {} MiB a data \
         file may hold",
        .limit >> 20
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The dimensions declared, as `a×b×c`.
        dims: String,
        /// [`MAX_DATA_BYTES`].
        limit: u64,
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
    #[error("{path}: more data than the {expected} bytes the header describes")]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Bytes the header describes.
        expected: usize,
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

/// An IDX stream whose header has been read: its dimensions are known, its data not
/// read yet (so callers can check the header against other files first).
pub struct IdxReader<R> {
    path: PathBuf,
    dims: Vec<usize>,
    len: usize,
    gz: bool,
    reader: R,
}

impl IdxReader<Box<dyn Read>> {
    /// Opens a raw or gzipped IDX file (told apart by the gzip magic) and reads its
    /// header.
    pub fn open(path: &Path) -> Result<Self, IdxError> {
        let io = |source| IdxError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = BufReader::new(std::fs::File::open(path).map_err(io)?);
        let gz = file.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn Read> = if gz {
            Box::new(MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        };
        IdxReader::new(reader, path, gz)
    }
}

impl<R: Read> IdxReader<R> {
    /// Reads the header of an IDX stream (`gz`: decompressed from gzip, for error
    /// messages); `path` only names the source in errors.
    pub fn new(mut reader: R, path: &Path, gz: bool) -> Result<Self, IdxError> {
        let p = || path.to_path_buf();
        let mut magic = [0u8; 4];
        let got = read_up_to(&mut reader, &mut magic, gz, path)?;
        if got < 4 {
            return Err(IdxError::BadHeader { path: p(), got });
        }
        if magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 {
            return Err(IdxError::BadMagic { path: p(), magic });
        }
        let rank = magic[3] as usize;
        let mut header = vec![0u8; 4 * rank];
        let got = read_up_to(&mut reader, &mut header, gz, path)?;
        if rank == 0 || got < header.len() {
            return Err(IdxError::BadHeader {
                path: p(),
                got: 4 + got,
            });
        }
        let dims: Vec<usize> = header
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
            .collect();
        let len = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .filter(|&len| len <= MAX_DATA_BYTES)
            .ok_or_else(|| IdxError::TooLarge {
                path: p(),
                dims: dims
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("×"),
                limit: MAX_DATA_BYTES,
            })? as usize;
        Ok(IdxReader {
            path: p(),
            dims,
            len,
            gz,
            reader,
        })
    }

    /// The dimensions the header declares, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Checks the header declares `rank` dimensions.
    pub fn check_rank(&self, rank: usize) -> Result<(), IdxError> {
        if self.dims.len() == rank {
            return Ok(());
        }
        Err(IdxError::Rank {
            path: self.path.clone(),
            expected: rank,
            got: self.dims.len(),
        })
    }

    /// Reads exactly the data the header declares, and checks nothing follows.
    pub fn read_data(mut self) -> Result<IdxArray, IdxError> {
        // Grows with what is actually read: a lying header costs nothing up front.
        let mut data = Vec::with_capacity(self.len.min(64 << 20));
        (&mut self.reader)
            .take(self.len as u64)
            .read_to_end(&mut data)
            .map_err(|e| stream_error(&self.path, self.gz, e))?;
        if data.len() < self.len {
            return Err(IdxError::Truncated {
                path: self.path,
                expected: self.len,
                got: data.len(),
            });
        }
        let mut more = [0u8; 1];
        if read_up_to(&mut self.reader, &mut more, self.gz, &self.path)? > 0 {
            return Err(IdxError::TrailingBytes {
                path: self.path,
                expected: self.len,
            });
        }
        Ok(IdxArray {
            dims: self.dims,
            data,
        })
    }
}

/// A read error of a raw stream, or a decompression error of a gzipped one.
fn stream_error(path: &Path, gz: bool, source: std::io::Error) -> IdxError {
    let path = path.to_path_buf();
    if gz {
        IdxError::Gzip { path, source }
    } else {
        IdxError::Io { path, source }
    }
}

/// Fills as much of `buf` as the stream has; returns how much.
fn read_up_to(
    reader: &mut impl Read,
    buf: &mut [u8],
    gz: bool,
    path: &Path,
) -> Result<usize, IdxError> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => return Err(stream_error(path, gz, source)),
        }
    }
    Ok(got)
}

/// Parses IDX bytes (already un-gzipped); `path` only names the source in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<IdxArray, IdxError> {
    IdxReader::new(bytes, path, false)?.read_data()
}

/// Reads and parses an IDX file, checking its rank.
pub fn read(path: &Path, rank: usize) -> Result<IdxArray, IdxError> {
    let reader = IdxReader::open(path)?;
    reader.check_rank(rank)?;
    reader.read_data()
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
            Err(IdxError::TrailingBytes { expected: 16, .. })
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

    /// `cat a.gz b.gz` is a valid gzip file: every member is read.
    #[test]
    fn multi_member_gzip_is_read_whole() {
        let data: Vec<u8> = (0..3 * 4 * 4).map(|i| i as u8).collect();
        let bytes = encode(&[3, 4, 4], &data);
        let mut two = gzip(&bytes[..20]).unwrap();
        two.extend(gzip(&bytes[20..]).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("two.gz");
        std::fs::write(&f, two).unwrap();
        assert_eq!(read(&f, 3).unwrap(), parse(&bytes, &p()).unwrap());
    }

    /// A gzip bomb whose header declares more than [`MAX_DATA_BYTES`] is refused from
    /// its header; one that declares little is read no further than declared.
    #[test]
    fn bombs_are_refused_from_the_header_and_never_read_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bomb.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&encode(&[70_000, 128, 128], &[])).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        std::fs::write(&f, enc.finish().unwrap()).unwrap();
        let e = read(&f, 3).unwrap_err();
        assert!(matches!(e, IdxError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("70000×128×128"), "{e}");

        /// Counts what is read from it.
        struct Counting<R>(R, std::rc::Rc<std::cell::Cell<usize>>);
        impl<R: Read> Read for Counting<R> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.read(buf)?;
                self.1.set(self.1.get() + n);
                Ok(n)
            }
        }
        let mut long = encode(&[10, 2, 2], &[5; 40]);
        long.extend(std::iter::repeat_n(0u8, 1 << 20));
        let count = std::rc::Rc::new(std::cell::Cell::new(0));
        let r = IdxReader::new(Counting(long.as_slice(), count.clone()), &p(), false).unwrap();
        assert_eq!(r.dims(), [10, 2, 2]);
        let e = r.read_data().unwrap_err();
        assert!(
            matches!(e, IdxError::TrailingBytes { expected: 40, .. }),
            "{e}"
        );
        assert!(count.get() <= 16 + 40 + 1, "read {} bytes", count.get());
    }
}
