//! The learning tasks of SPEC §6: seeded synthetic generators and pixel sequences from IDX files.

use nalgebra::DMatrix;

/// What a batch is scored against.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// One class index per sequence (cross-entropy).
    Labels(Vec<usize>),
    /// A B×q matrix of real targets (squared error).
    Values(DMatrix<f64>),
}

impl Targets {
    /// Number of sequences the targets cover.
    pub fn len(&self) -> usize {
        match self {
            Targets::Labels(l) => l.len(),
            Targets::Values(v) => v.nrows(),
        }
    }

    /// True when there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// B sequences of length T: `x[t]` is the B×p input at step t+1.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub x: Vec<DMatrix<f64>>,
    pub y: Targets,
}

impl Batch {
    /// Sequence length T.
    pub fn seq_len(&self) -> usize {
        self.x.len()
    }

    /// Number of sequences B.
    pub fn batch_size(&self) -> usize {
        self.y.len()
    }

    /// Input size p.
    pub fn input_size(&self) -> usize {
        self.x.first().map_or(0, |m| m.ncols())
    }
}
