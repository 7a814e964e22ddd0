//! A training run's directory: its identity (`run.json`), its lock, and the explicit
//! save and load functions of everything a run keeps there. Every file is written
//! atomically (temporary file, then rename), so an interruption, even `kill -9`, leaves
//! the old file or the new one.

use super::{Checkpoint, Summary, TrainConfig, TrainError};
use crate::fsutil::{read_capped, write_atomic};
use crate::nn::Network;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// File names inside a run directory.
pub mod files {
    /// The run's configuration and identity (JSON), written before the first epoch.
    pub const CONFIG: &str = "run.json";
    /// Network and optimiser state after the last finished epoch.
    pub const CHECKPOINT: &str = "checkpoint.bin";
    /// The trained model (core model file, f32 kind).
    pub const MODEL: &str = "model.spartan";
    /// Per-batch loss.
    pub const LOSS_CSV: &str = "loss.csv";
    /// Final metrics (JSON).
    pub const SUMMARY: &str = "summary.json";
    /// The loss chart the `spartan` binary draws after each epoch.
    pub const LOSS_PNG: &str = "loss.png";
    /// Locked by the process writing the directory, holding its pid. The lock is the
    /// operating system's: it ends with the process, however it ends (`kill -9`
    /// included), so a lock file left by a killed run is stale and is taken over.
    pub const LOCK: &str = ".lock";
    /// What a run writes: what `--overwrite` removes.
    pub const OUTPUTS: [&str; 6] = [CONFIG, CHECKPOINT, MODEL, LOSS_CSV, SUMMARY, LOSS_PNG];
}

/// Largest `run.json` read.
const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Largest `checkpoint.bin` read (parameters and optimiser moments of a network far
/// larger than any trained here).
const MAX_CHECKPOINT_BYTES: u64 = 4 << 30;

/// What `run.json` holds: the configuration and the run's identity, which every
/// checkpoint of the run repeats, so that a checkpoint continues only its own run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unique per run started (time and process), kept when a run is resumed.
    pub run_id: String,
    /// [`config_hash`] of `config`: an edited `run.json` is noticed.
    pub config_hash: String,
    /// The configuration.
    #[serde(flatten)]
    pub config: TrainConfig,
}

impl RunRecord {
    /// A new run of `config`, with a new id.
    pub fn new(config: TrainConfig) -> Self {
        RunRecord {
            run_id: new_run_id(),
            config_hash: config_hash(&config),
            config,
        }
    }

    /// The same run with another configuration (extended epochs).
    pub fn with_config(&self, config: TrainConfig) -> Self {
        RunRecord {
            run_id: self.run_id.clone(),
            config_hash: config_hash(&config),
            config,
        }
    }
}

/// A stable hash of a configuration (CRC-64 of its postcard encoding), as 16 hex digits.
pub fn config_hash(config: &TrainConfig) -> String {
    let bytes = postcard::to_allocvec(config).unwrap_or_default();
    let crc = crc::Crc::<u64>::new(&crc::CRC_64_ECMA_182);
    format!("{:016x}", crc.checksum(&bytes))
}

/// An id no other run has: the time in nanoseconds, the process id and a counter,
/// hashed.
fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let crc = crc::Crc::<u64>::new(&crc::CRC_64_ECMA_182);
    let mut digest = crc.digest();
    digest.update(&nanos.to_le_bytes());
    digest.update(&std::process::id().to_le_bytes());
    digest.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    format!("{:016x}", digest.finalize())
}

/// How [`train`](super::train) treats its directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A new run: the directory must be new or empty.
    Fresh,
    /// A new run replacing the one in the directory: its files are removed first.
    Overwrite,
    /// Continue the run in the directory from its last checkpoint.
    Resume,
}

/// The lock of a run directory, held while a process writes it; released when dropped
/// or when the process ends, however it ends.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// A run directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The run directory at `path`, created if needed.
    pub fn create(path: &Path) -> Result<Self, TrainError> {
        std::fs::create_dir_all(path).map_err(io_err(path, "cannot create"))?;
        Ok(Self::open(path))
    }

    /// The run directory at `path`, as it is.
    pub fn open(path: &Path) -> Self {
        RunDir {
            path: path.to_path_buf(),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of one of its [`files`].
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// An error about one of its files, for a run that cannot be resumed.
    pub fn resume_error(&self, name: &str, message: String) -> TrainError {
        TrainError::Resume {
            path: self.file(name),
            message,
        }
    }

    /// Takes the directory's lock, or says which process holds it. A lock file left by
    /// a process that ended is not held: it is taken over.
    pub fn lock(&self) -> Result<RunLock, TrainError> {
        let path = self.file(files::LOCK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path, "cannot open"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(TrainError::Locked {
                    dir: self.path.clone(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(&path, "cannot lock")(e)),
        }
        file.set_len(0)
            .and_then(|()| writeln!(file, "pid {}", std::process::id()))
            .map_err(io_err(&path, "cannot write"))?;
        Ok(RunLock { _file: file })
    }

    /// Checks the directory holds nothing yet (but a lock file), for a fresh run.
    pub fn ensure_empty(&self) -> Result<(), TrainError> {
        let entries = std::fs::read_dir(&self.path).map_err(io_err(&self.path, "cannot list"))?;
        let mut found: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name != files::LOCK)
            .collect();
        if found.is_empty() {
            return Ok(());
        }
        found.sort();
        Err(TrainError::NotEmpty {
            dir: self.path.clone(),
            found: found.join(", "),
        })
    }

    /// Removes what an earlier run wrote ([`files::OUTPUTS`] and temporary files of
    /// interrupted writes), for a run that replaces it. Other files stay.
    pub fn clear(&self) -> Result<(), TrainError> {
        for name in files::OUTPUTS {
            let path = self.file(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(&path, "cannot remove")(e));
                }
                _ => {}
            }
        }
        self.remove_temporaries()
    }

    /// Removes the temporary files of writes a killed process left unfinished.
    pub fn remove_temporaries(&self) -> Result<(), TrainError> {
        let entries = std::fs::read_dir(&self.path).map_err(io_err(&self.path, "cannot list"))?;
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let unfinished = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".tmp"))
                .is_some_and(|n| {
                    files::OUTPUTS
                        .iter()
                        .any(|o| n.starts_with(&format!("{o}.")))
                });
            if unfinished {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Saves the configuration and identity (`run.json`).
    pub fn save_record(&self, record: &RunRecord) -> Result<(), TrainError> {
        let json = serde_json::to_string_pretty(record).unwrap_or_default();
        self.write(files::CONFIG, json.as_bytes())
    }

    /// Reads `run.json`, checking its configuration is the one its hash was made of.
    pub fn load_record(&self) -> Result<RunRecord, TrainError> {
        let path = self.file(files::CONFIG);
        if !path.exists() && self.path.is_dir() {
            return Err(self.resume_error(
                files::CONFIG,
                "not found: the directory holds no run to resume".into(),
            ));
        }
        let bytes = read_capped(&path, MAX_CONFIG_BYTES, "run configuration", b"")?;
        let record: RunRecord = serde_json::from_slice(&bytes).map_err(|e| {
            self.resume_error(
                files::CONFIG,
                format!("not a run configuration of this version of spartan ({e})"),
            )
        })?;
        if config_hash(&record.config) != record.config_hash {
            return Err(self.resume_error(
                files::CONFIG,
                "edited: its configuration no longer matches its config_hash".into(),
            ));
        }
        Ok(record)
    }

    /// Reads the configuration (for `--resume`).
    pub fn load_config(&self) -> Result<TrainConfig, TrainError> {
        Ok(self.load_record()?.config)
    }

    /// Saves the state after an epoch (`checkpoint.bin`).
    pub fn save_checkpoint(&self, state: &Checkpoint) -> Result<(), TrainError> {
        let bytes = postcard::to_allocvec(state)
            .map_err(|e| TrainError::Config(format!("checkpoint encoding: {e}")))?;
        self.write(files::CHECKPOINT, &bytes)
    }

    /// The saved checkpoint, or `None` when no epoch has finished yet.
    pub fn load_checkpoint(&self) -> Result<Option<Checkpoint>, TrainError> {
        let path = self.file(files::CHECKPOINT);
        if !path.is_file() {
            return Ok(None);
        }
        let bytes = read_capped(&path, MAX_CHECKPOINT_BYTES, "checkpoint", b"")?;
        postcard::from_bytes(&bytes).map(Some).map_err(|e| {
            self.resume_error(
                files::CHECKPOINT,
                format!("not a checkpoint of this version of spartan, or corrupt ({e})"),
            )
        })
    }

    /// Saves the per-batch losses (`loss.csv`, one row per batch).
    pub fn save_losses(&self, losses: &[f32], batches_per_epoch: usize) -> Result<(), TrainError> {
        let mut s = String::from("step,epoch,loss\n");
        for (i, l) in losses.iter().enumerate() {
            s += &format!("{},{},{}\n", i + 1, i / batches_per_epoch.max(1) + 1, l);
        }
        self.write(files::LOSS_CSV, s.as_bytes())
    }

    /// Saves the trained model (`model.spartan`).
    pub fn save_model(&self, net: &Network) -> Result<(), TrainError> {
        self.write(files::MODEL, &net.to_model_bytes())
    }

    /// Saves the final metrics (`summary.json`).
    pub fn save_summary(&self, summary: &Summary) -> Result<(), TrainError> {
        let json = serde_json::to_string_pretty(summary).unwrap_or_default();
        self.write(files::SUMMARY, json.as_bytes())
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), TrainError> {
        let path = self.file(name);
        write_atomic(&path, bytes).map_err(io_err(&path, "cannot write"))
    }
}

/// Reads the configuration of an existing run directory (for `--resume`).
pub fn read_config(run: &Path) -> Result<TrainConfig, TrainError> {
    RunDir::open(run).load_config()
}

fn io_err<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> TrainError + 'a {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}
