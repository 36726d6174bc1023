//! Checkpoints: the model, the optimizer state, the epoch and the statistics in one file,
//! written atomically (a temporary file, then a rename), so a crash never leaves half a
//! checkpoint and the previous one stays until the new one is complete.
//!
//! Layout: the magic line `LOSSKIT-CHECKPOINT 1\n`, then three sections, each a little-endian
//! `u64` length and its bytes: the JSON metadata, the model (burnpack, with parameter ids so
//! that optimizer state finds its parameters) and the optimizer state (burnpack).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{error::TrainError, stats::RunStats};

const MAGIC: &[u8] = b"LOSSKIT-CHECKPOINT 1\n";

/// The file name of a run's checkpoint inside its output folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.lkc";

/// What a checkpoint records besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Epochs finished.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub global_step: usize,
    /// The run's configuration (task, data, loss, optimizer, schedule, seed, ...), as the
    /// caller described it.
    pub run: Value,
    /// The statistics so far.
    pub stats: RunStats,
}

/// A checkpoint read back.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The metadata.
    pub meta: CheckpointMeta,
    /// The model's burnpack bytes.
    pub model: Vec<u8>,
    /// The optimizer state's burnpack bytes.
    pub optimizer: Vec<u8>,
}

impl Checkpoint {
    /// Encodes the checkpoint.
    pub fn encode(&self) -> Result<Vec<u8>, TrainError> {
        let meta = serde_json::to_vec(&self.meta).map_err(|error| {
            TrainError::Checkpoint(format!("cannot encode checkpoint metadata: {error}"))
        })?;
        let mut out = Vec::with_capacity(
            MAGIC.len() + 24 + meta.len() + self.model.len() + self.optimizer.len(),
        );
        out.extend_from_slice(MAGIC);
        for section in [&meta, &self.model, &self.optimizer] {
            out.extend_from_slice(&(section.len() as u64).to_le_bytes());
            out.extend_from_slice(section);
        }
        Ok(out)
    }

    /// Decodes a checkpoint; `source` names it in errors.
    pub fn decode(bytes: &[u8], source: &str) -> Result<Self, TrainError> {
        let bad = |what: &str| {
            TrainError::Checkpoint(format!("{source} is not a losskit checkpoint ({what})"))
        };
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| bad("wrong header"))?;
        let mut sections = Vec::new();
        let mut rest = rest;
        for _ in 0..3 {
            if rest.len() < 8 {
                return Err(bad("truncated"));
            }
            let (len, tail) = rest.split_at(8);
            let len = u64::from_le_bytes(len.try_into().map_err(|_| bad("truncated"))?) as usize;
            if tail.len() < len {
                return Err(bad("truncated"));
            }
            let (section, tail) = tail.split_at(len);
            sections.push(section.to_vec());
            rest = tail;
        }
        let optimizer = sections.pop().unwrap_or_default();
        let model = sections.pop().unwrap_or_default();
        let meta: CheckpointMeta = serde_json::from_slice(&sections.pop().unwrap_or_default())
            .map_err(|error| bad(&format!("bad metadata: {error}")))?;
        Ok(Self {
            meta,
            model,
            optimizer,
        })
    }

    /// Reads a checkpoint from a file, or from `checkpoint.lkc` in a folder.
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let file = resolve(path);
        let bytes = std::fs::read(&file).map_err(|error| {
            TrainError::Checkpoint(format!(
                "cannot read checkpoint {}: {error}",
                file.display()
            ))
        })?;
        Self::decode(&bytes, &file.display().to_string())
    }

    /// Writes the checkpoint atomically.
    pub fn write(&self, path: &Path) -> Result<(), TrainError> {
        Ok(losskit_core::atomic_write::write_atomically(
            path,
            &self.encode()?,
        )?)
    }
}

/// The checkpoint file for a path that is either the file or the run folder holding it.
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(CHECKPOINT_FILE)
    } else {
        path.to_path_buf()
    }
}
