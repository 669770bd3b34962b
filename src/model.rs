//! The recurrent cells (docs/ALGORITHM.md §1 tanh RNN, docs/ALGORITHM.md §5 GRU) with their linear head: parameters,
//! their sizes and shapes (the seeded initialisation is `init`).

use anyhow::Result;
use nalgebra::DMatrix;

use crate::dtp::{ReverseLayer, REVERSE_FIELDS, REVERSE_NAMES};
use crate::error::{shape_of, Error};
use crate::memory::{available_memory, check_fits, MemoryEstimate};

/// Sizes of the model: input p, hidden d, output q.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dims {
    /// Input size p: features per step.
    pub input: usize,
    /// Hidden size d.
    pub hidden: usize,
    /// Output size q: classes, or regression targets.
    pub output: usize,
}

/// Which recurrent cell the model uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum CellKind {
    /// `h_t = tanh(W h_{t−1} + U x_t + b)` (docs/ALGORITHM.md §1).
    #[default]
    Tanh,
    /// The GRU of docs/ALGORITHM.md §5 in PyTorch's convention and layout.
    Gru,
}

impl CellKind {
    /// Rows of the recurrent tensors per hidden unit: 1, or 3 for the GRU's gates r, z, n.
    pub fn gates(self) -> usize {
        match self {
            CellKind::Tanh => 1,
            CellKind::Gru => 3,
        }
    }

    /// Names of the parameter tensors, in the order `Params::tensors` yields them.
    pub fn param_names(self) -> &'static [&'static str] {
        match self {
            CellKind::Tanh => &PARAM_NAMES,
            CellKind::Gru => &GRU_PARAM_NAMES,
        }
    }

    /// The fields of [`Params`] that hold the tensors, in `param_names` order (what the
    /// library's messages name, e.g. `Params::w_hh`).
    pub fn param_fields(self) -> &'static [&'static str] {
        match self {
            CellKind::Tanh | CellKind::Gru => &[
                "Params::w_hh",
                "Params::w_ih",
                "Params::b",
                "Params::b_hh",
                "Params::head_w",
                "Params::head_b",
            ],
        }
    }
}

impl Dims {
    /// Checks that every size is at least 1 and that every tensor of a `cell` model of these
    /// sizes can be addressed, naming the field (`Dims::hidden`, …).
    pub fn check(self, cell: CellKind) -> Result<()> {
        for (field, what, n) in [
            ("Dims::input", "the input size p", self.input),
            ("Dims::hidden", "the hidden size d", self.hidden),
            ("Dims::output", "the output size q", self.output),
        ] {
            if n == 0 {
                return Err(
                    Error::setting(field, format!("{what} must be at least 1, got 0")).into(),
                );
            }
        }
        self.addressable_count(cell)?;
        Ok(())
    }

    /// [`Dims::param_count`], or an error when memory cannot address the tensors.
    pub(crate) fn addressable_count(self, cell: CellKind) -> Result<u64> {
        self.param_count(cell).ok_or_else(|| {
            Error::DeviceLimit {
                limit: "address space".into(),
                needed: None,
                allowed: isize::MAX as u64,
                message: format!(
                    "a {cell:?} model with p = {}, d = {}, q = {} has more parameters than \
                     memory can address",
                    self.input, self.hidden, self.output
                ),
            }
            .into()
        })
    }

    /// How many numbers the parameters of a `cell` model of these sizes hold; `None` when
    /// a tensor would have more elements than a matrix of f64 can address.
    pub fn param_count(self, cell: CellKind) -> Option<u64> {
        let (p, d, q) = (self.input as u64, self.hidden as u64, self.output as u64);
        let g = cell.gates() as u64;
        let gd = g.checked_mul(d)?;
        let tensors = [
            gd.checked_mul(d)?,
            gd.checked_mul(p)?,
            gd.checked_mul(2)?,
            q.checked_mul(d)?,
            q,
        ];
        // Each tensor is one allocation of f64.
        let most = (isize::MAX as u64) / 8;
        if tensors.iter().any(|&n| n > most) {
            return None;
        }
        tensors.iter().try_fold(0u64, |a, &n| a.checked_add(n))
    }
}

/// Names of the tanh RNN's parameter tensors, in the order `Params::tensors` yields them:
/// PyTorch's `nn.RNN` has two biases that add, and so does tpri's tanh RNN, so that every
/// optimizer steps each of them as PyTorch does (docs/ALGORITHM.md §1).
pub const PARAM_NAMES: [&str; 6] = [
    "rnn.w_hh", "rnn.w_ih", "rnn.b_ih", "rnn.b_hh", "head.w", "head.b",
];

/// The tanh RNN's single bias in files written before it had two: read as `rnn.b_ih`, with
/// `rnn.b_hh` zero.
pub const LEGACY_RNN_BIAS: &str = "rnn.b";

/// Names of the GRU's parameter tensors (PyTorch's `weight_hh_l0`, `weight_ih_l0`,
/// `bias_ih_l0`, `bias_hh_l0`, then the head).
pub const GRU_PARAM_NAMES: [&str; 6] = [
    "gru.w_hh", "gru.w_ih", "gru.b_ih", "gru.b_hh", "head.w", "head.b",
];

/// Names of the head's tensors (V, c), the last two of both cells' lists: the tensors
/// `OptimizerConfig::lr_head` steps.
pub const HEAD_NAMES: [&str; 2] = ["head.w", "head.b"];

/// The GRU's gates in the order PyTorch stacks their blocks of d rows in `w_hh`, `w_ih`
/// and both biases.
pub const GRU_GATES: [&str; 3] = ["r", "z", "n"];

/// The name of the trained embedding table E [V, e] in files (tpri's and PyTorch's alike:
/// the state dict of an `nn.Embedding` held as `embed`), docs/ALGORITHM.md §13.
pub const EMBEDDING_NAME: &str = "embed.weight";

/// The field that holds the trained embedding table, for messages.
pub const EMBEDDING_FIELD: &str = "Params::embedding";

/// Whether the tensor called `name` is a bias, stored as a 1-D tensor in files.
pub fn is_bias(name: &str) -> bool {
    name.rsplit('.')
        .next()
        .is_some_and(|last| last.starts_with('b'))
}

/// Parameters of the recurrent cell and its head. Biases are column matrices so that every
/// tensor is handled alike (optimizers, files, norms). Gradients use the same type.
///
/// The GRU stacks its three gates r, z, n along the rows of `w_hh`, `w_ih`, `b` and `b_hh`,
/// exactly as PyTorch does, so that its weights move between the two unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Which cell the tensors belong to (it fixes their shapes and names).
    pub cell: CellKind,
    /// W: d×d (GRU: [W_r; W_z; W_n], 3d×d).
    pub w_hh: DMatrix<f64>,
    /// U: d×p (GRU: 3d×p).
    pub w_ih: DMatrix<f64>,
    /// b_ih: d×1 (GRU: [b_ir; b_iz; b_in], 3d×1).
    pub b: DMatrix<f64>,
    /// b_hh: d×1 (GRU: [b_hr; b_hz; b_hn], 3d×1). The tanh RNN adds it to `b`
    /// ([`Params::tanh_bias`]); the GRU keeps it apart because b_hn sits inside r ⊙ (…).
    pub b_hh: DMatrix<f64>,
    /// V: q×d.
    pub head_w: DMatrix<f64>,
    /// c: q×1.
    pub head_b: DMatrix<f64>,
    /// DTP's learned reverse layer (`Method::Dtp`, docs/ALGORITHM.md §14): present only
    /// in its runs' parameters, gradients and optimizer slots, after the cell's tensors.
    pub dtp: Option<ReverseLayer>,
    /// The language model's trained embedding table E [V, e] (e = p, one row per
    /// vocabulary word; docs/ALGORITHM.md §13): present only in runs that train it
    /// (`--train-embedding`), in their parameters, gradients and optimizer slots, after
    /// the cell's tensors and before the reverse layer's. Absent, the inputs x_t come
    /// ready-made with the batch (a frozen table applied by the task).
    pub embedding: Option<DMatrix<f64>>,
}

impl Params {
    /// All-zero tanh-RNN parameters of the given sizes (also the zero gradient). Errors as
    /// [`Params::zeros_of`].
    pub fn zeros(dims: Dims) -> Result<Self> {
        Self::zeros_of(CellKind::Tanh, dims)
    }

    /// All-zero parameters of `cell` with the given sizes (0 allowed: empty tensors), after
    /// checking that the tensors can be addressed and fit in the memory available: an
    /// error naming the size, instead of a panic or an aborted allocation.
    pub fn zeros_of(cell: CellKind, dims: Dims) -> Result<Self> {
        Self::check_memory(cell, dims)?;
        Ok(Self::zeroed(cell, dims))
    }

    /// `zeros_of` for sizes already checked (those of existing parameters).
    pub(crate) fn zeroed(cell: CellKind, dims: Dims) -> Self {
        let Dims {
            input: p,
            hidden: d,
            output: q,
        } = dims;
        let g = cell.gates();
        Self {
            cell,
            w_hh: DMatrix::zeros(g * d, d),
            w_ih: DMatrix::zeros(g * d, p),
            b: DMatrix::zeros(g * d, 1),
            b_hh: DMatrix::zeros(g * d, 1),
            head_w: DMatrix::zeros(q, d),
            head_b: DMatrix::zeros(q, 1),
            dtp: None,
            embedding: None,
        }
    }

    /// The tanh RNN's bias b of docs/ALGORITHM.md §1: the sum `b_ih + b_hh` of its two (an
    /// error naming `Params::b_hh` where the two differ in shape).
    pub fn tanh_bias(&self) -> Result<DMatrix<f64>> {
        if self.b_hh.shape() != self.b.shape() {
            let shape = |m: &DMatrix<f64>| shape_of(&[m.nrows(), m.ncols()]);
            return Err(Error::shape(
                "Params::b_hh (rnn.b_hh)",
                shape(&self.b_hh),
                format!("{}, the shape of Params::b", shape(&self.b)),
            )
            .into());
        }
        Ok(self.bias_sum())
    }

    /// `tanh_bias` of parameters whose shapes are checked (`validate::check_param_shapes`).
    pub(crate) fn bias_sum(&self) -> DMatrix<f64> {
        &self.b + &self.b_hh
    }

    /// Euclidean norm of all tensors together (of a gradient: what the diagnostics log).
    pub fn norm(&self) -> f64 {
        self.tensors()
            .iter()
            .map(|(_, t)| t.norm_squared())
            .sum::<f64>()
            .sqrt()
    }

    /// Zeros of the same cell and shapes, with a reverse layer and an embedding table where
    /// these have them (a gradient or an optimizer slot): tensor by tensor, so that it
    /// takes no more memory than these parameters, whatever their shapes.
    pub fn zeros_like(&self) -> Self {
        let mut zeros = self.clone();
        for m in zeros.tensors_mut() {
            m.fill(0.0);
        }
        zeros
    }

    /// Checks that every size is at least 1, that the tensors of a `cell` model of sizes
    /// `dims` can be addressed and that they (and an SVD's work space) fit in the memory
    /// available: an error naming the size, instead of a panic or an aborted allocation.
    pub(crate) fn check_allocation(cell: CellKind, dims: Dims) -> Result<()> {
        dims.check(cell)?;
        Self::check_memory(cell, dims)
    }

    /// `check_allocation` without the lower bound: sizes of 0 pass.
    fn check_memory(cell: CellKind, dims: Dims) -> Result<()> {
        let count = dims.addressable_count(cell)?;
        let estimate = MemoryEstimate {
            // The parameters, and the SVD's work space for the largest tensor.
            parameters: count.saturating_mul(8).saturating_mul(2),
            ..MemoryEstimate::default()
        };
        check_fits("the parameters", &estimate, available_memory())
    }

    /// The sizes these parameters belong to.
    pub fn dims(&self) -> Dims {
        Dims {
            input: self.w_ih.ncols(),
            hidden: self.w_hh.ncols(),
            output: self.head_w.nrows(),
        }
    }

    /// The tensors paired with their names ([`Params::names`] order).
    pub fn tensors(&self) -> Vec<(&'static str, &DMatrix<f64>)> {
        let mut all = vec![
            &self.w_hh,
            &self.w_ih,
            &self.b,
            &self.b_hh,
            &self.head_w,
            &self.head_b,
        ];
        all.extend(&self.embedding);
        all.extend(self.dtp.iter().flat_map(ReverseLayer::tensors));
        self.names().into_iter().zip(all).collect()
    }

    /// Mutable tensors in [`Params::names`] order.
    pub fn tensors_mut(&mut self) -> Vec<&mut DMatrix<f64>> {
        let mut all = vec![
            &mut self.w_hh,
            &mut self.w_ih,
            &mut self.b,
            &mut self.b_hh,
            &mut self.head_w,
            &mut self.head_b,
        ];
        all.extend(&mut self.embedding);
        all.extend(self.dtp.iter_mut().flat_map(ReverseLayer::tensors_mut));
        all
    }

    /// The names of the tensors in files: the cell's (`CellKind::param_names`), then
    /// [`EMBEDDING_NAME`] and the reverse layer's (`dtp::REVERSE_NAMES`) where there are
    /// such.
    pub fn names(&self) -> Vec<&'static str> {
        let embedding = self
            .embedding
            .as_ref()
            .map_or(&[][..], |_| &[EMBEDDING_NAME][..]);
        let reverse = self.dtp.as_ref().map_or(&[][..], |_| &REVERSE_NAMES[..]);
        [self.cell.param_names(), embedding, reverse].concat()
    }

    /// The fields that hold the tensors, in [`Params::names`] order (what the library's
    /// messages name).
    pub fn fields(&self) -> Vec<&'static str> {
        let embedding = self
            .embedding
            .as_ref()
            .map_or(&[][..], |_| &[EMBEDDING_FIELD][..]);
        let reverse = self.dtp.as_ref().map_or(&[][..], |_| &REVERSE_FIELDS[..]);
        [self.cell.param_fields(), embedding, reverse].concat()
    }

    /// The number of rows V of the trained embedding table, where there is one.
    pub fn vocabulary(&self) -> Option<usize> {
        self.embedding.as_ref().map(DMatrix::nrows)
    }

    /// The shapes the tensors of a `cell` model of sizes `dims` have, in `tensors` order
    /// (biases as columns), without allocating them.
    pub fn shapes(cell: CellKind, dims: Dims) -> Vec<(usize, usize)> {
        let Dims {
            input: p,
            hidden: d,
            output: q,
        } = dims;
        let gd = cell.gates().saturating_mul(d);
        vec![(gd, d), (gd, p), (gd, 1), (gd, 1), (q, d), (q, 1)]
    }

    /// Checks that every tensor has the shape `dims` implies, naming the first that does not as its field and its name in
    /// files, e.g. `Params::w_hh (rnn.w_hh)`. A trained embedding table may have any
    /// number V ≥ 1 of rows (its vocabulary), and p columns.
    pub fn check_dims(&self, dims: Dims) -> Result<()> {
        let fields = self.fields();
        let mut want = Self::shapes(self.cell, dims);
        if let Some(e) = &self.embedding {
            want.push((e.nrows().max(1), dims.input));
        }
        if self.dtp.is_some() {
            want.extend(ReverseLayer::shapes(dims.hidden));
        }
        for (((name, got), field), exp) in self.tensors().iter().zip(fields).zip(want) {
            if got.shape() != exp {
                let (r, c) = got.shape();
                return Err(Error::shape(
                    format!("{field} ({name})"),
                    shape_of(&[r, c]),
                    format!(
                        "{} for p = {}, d = {}, q = {}",
                        shape_of(&[exp.0, exp.1]),
                        dims.input,
                        dims.hidden,
                        dims.output
                    ),
                )
                .into());
            }
        }
        Ok(())
    }
}
