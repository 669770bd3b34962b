//! How the GPU backend runs on its device: what it stores the histories in, and how it
//! splits its long loops into launches.

use crate::gpu::segments::StepsPerDispatch;
use crate::gpu::storage::Storage;

/// The GPU backend's settings beyond the device (`--storage`, `--steps-per-dispatch`).
/// Neither changes the mathematics: f16 storage rounds the stored histories (docs/ALGORITHM.md
/// §11), and the split into launches changes nothing at all but how long each runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GpuOptions {
    /// Element type of the histories h and v − h.
    pub storage: Storage,
    /// How much of a long loop one launch runs.
    pub steps_per_dispatch: StepsPerDispatch,
}

impl From<Storage> for GpuOptions {
    fn from(storage: Storage) -> Self {
        Self {
            storage,
            ..Self::default()
        }
    }
}
