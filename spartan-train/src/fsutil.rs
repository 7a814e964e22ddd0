//! Files that are either fully written or not there at all, and files read whole with
//! a bound on their size.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is
/// written and synced, then renamed over the target, so an interruption (even
/// `kill -9`) leaves either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // pid + counter keep concurrent writers (threads or processes) apart.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp: PathBuf = dir.join(format!(".{name}.{}-{unique}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Persist the rename itself; not all platforms can open a directory.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic`] for text.
pub fn write_atomic_str(path: &Path, text: &str) -> std::io::Result<()> {
    write_atomic(path, text.as_bytes())
}

/// Why a file could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is larger than any file of its kind can be (or endless).
    #[error("{path}: larger than {limit} bytes, the most a {what} may have")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound.
        limit: u64,
        /// What the file should be.
        what: &'static str,
    },
    /// The file does not start as a file of its kind does.
    #[error("{path}: not a {what}")]
    BadStart {
        /// The file.
        path: PathBuf,
        /// What the file should be.
        what: &'static str,
    },
}

/// Reads a whole file of at most `limit` bytes, a `what` (for messages) that starts
/// with `prefix` (its magic; empty: any start). The start is checked first and a
/// regular file's size before anything else is read, so a wrong or endless file
/// (`/dev/zero`) costs at most `limit + 1` bytes of memory, and usually none.
pub fn read_capped(
    path: &Path,
    limit: u64,
    what: &'static str,
    prefix: &[u8],
) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let too_large = || ReadError::TooLarge {
        path: path.to_path_buf(),
        limit,
        what,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_file() && meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(if meta.is_file() {
        meta.len() as usize
    } else {
        0
    });
    let mut reader = file.take(limit + 1);
    (&mut reader)
        .take(prefix.len() as u64)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() == prefix.len() && bytes != prefix {
        return Err(ReadError::BadStart {
            path: path.to_path_buf(),
            what,
        });
    }
    reader.read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_atomic(&dir.path().join("missing/x"), b"1").is_err());
    }

    #[test]
    fn capped_reads_stop_at_the_bound_and_check_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.bin");
        std::fs::write(&p, b"SPRT and more").unwrap();
        assert_eq!(
            read_capped(&p, 13, "model", b"SPRT").unwrap(),
            b"SPRT and more"
        );
        let e = read_capped(&p, 12, "model", b"SPRT").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: larger than 12 bytes, the most a model may have",
                p.display()
            )
        );
        let e = read_capped(&p, 100, "Spartan model file", b"SPRX").unwrap_err();
        assert!(e.to_string().ends_with("not a Spartan model file"), "{e}");
        // Short files are left to the format's own checks.
        assert_eq!(
            read_capped(&p, 100, "model", b"SPRT and more, longer")
                .unwrap()
                .len(),
            13
        );
        // Endless files end at the bound, or at once on a wrong start.
        let zero = Path::new("/dev/zero");
        if zero.exists() {
            let e = read_capped(zero, 1 << 20, "model", b"").unwrap_err();
            assert!(matches!(e, ReadError::TooLarge { .. }), "{e}");
            let e = read_capped(zero, 1 << 40, "model", b"SPRT").unwrap_err();
            assert!(matches!(e, ReadError::BadStart { .. }), "{e}");
        }
        // A huge (sparse) file is refused before it is read.
        let big = dir.path().join("big.bin");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(1 << 33)
            .unwrap();
        let e = read_capped(&big, 1 << 20, "model", b"").unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { .. }), "{e}");
    }
}
