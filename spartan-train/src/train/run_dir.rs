//! A training run's directory and the explicit save and load functions of everything
//! a run keeps there. Every file is written atomically (temporary file, then rename),
//! so an interruption, even `kill -9`, leaves the old file or the new one.

use super::{Checkpoint, Summary, TrainConfig, TrainError};
use crate::fsutil::write_atomic;
use crate::nn::Network;
use std::path::{Path, PathBuf};

/// File names inside a run directory.
pub mod files {
    /// The run's configuration (JSON), written before the first epoch.
    pub const CONFIG: &str = "run.json";
    /// Network and optimiser state after the last finished epoch.
    pub const CHECKPOINT: &str = "checkpoint.bin";
    /// The trained model (core model file, f32 kind).
    pub const MODEL: &str = "model.spartan";
    /// Per-batch loss.
    pub const LOSS_CSV: &str = "loss.csv";
    /// Final metrics (JSON).
    pub const SUMMARY: &str = "summary.json";
}

/// A run directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The run directory at `path`, created if needed.
    pub fn create(path: &Path) -> Result<Self, TrainError> {
        std::fs::create_dir_all(path).map_err(io_err(path))?;
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

    /// Saves the configuration (`run.json`).
    pub fn save_config(&self, config: &TrainConfig) -> Result<(), TrainError> {
        let json = serde_json::to_string_pretty(config).unwrap_or_default();
        self.write(files::CONFIG, json.as_bytes())
    }

    /// Reads the configuration (for `--resume`).
    pub fn load_config(&self) -> Result<TrainConfig, TrainError> {
        let path = self.file(files::CONFIG);
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        serde_json::from_str(&text).map_err(|e| TrainError::Resume {
            path,
            message: format!("not a run configuration ({e})"),
        })
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
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| self.resume_error(files::CHECKPOINT, format!("corrupt checkpoint ({e})")))
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
        write_atomic(&path, bytes).map_err(io_err(&path))
    }
}

/// Reads the configuration of an existing run directory (for `--resume`).
pub fn read_config(run: &Path) -> Result<TrainConfig, TrainError> {
    RunDir::open(run).load_config()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}
