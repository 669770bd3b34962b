//! Where things sit on the device: the batch's shape, the flat parameter layout with its
//! binding-aligned slots, and the conversions between the host's f64 matrices and the
//! device's row-major f32 (the bottom layer of `gpu`: it imports no other module of it).
//!
//! Layout conventions (row-major, sequences as rows like the CPU reference; f32 unless
//! said otherwise): x [T, B, p]; h [T+1, B, d] (h_0 = 0 included) and the target offsets
//! dv = v − h [T+1, B, d] (see target_sweep.wgsl for why offsets), both `History`s in
//! the backend's `Storage` (f16 pads rows to even d; f16 only for the tanh RNN with the
//! analytic inversion); δ [T, B, g·d] (g = 3 gates for the GRU, whose δ is dgh, with dgi
//! beside it); the GRU's gates [T, B, 4d]; g_T [B, d]; parameters, gradients and
//! optimizer slots each one flat buffer holding the cell's tensors (W, U, b_ih, b_hh, V, c,
//! then a trained embedding table E [V, p] and DTP's reverse layer where there are such)
//! at offsets aligned for binding (`ParamLayout`).

use nalgebra::DMatrix;

use crate::config::Loss;
use crate::dtp::ReverseLayer;
use crate::model::{CellKind, Dims, Params};
use crate::tasks::Batch;

/// Largest hidden size d the fused kernels accept: they keep at most two d-vectors in
/// workgroup memory (16 KiB at 2048, what WebGPU guarantees). `shaders/include/limits.wgsl`
/// declares the same (`tests/shaders.rs` checks).
pub const MAX_HIDDEN: usize = 2048;

/// Number of sequences and steps of a batch: what the per-batch buffers are sized by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub batch: usize,
    pub steps: usize,
}

impl Shape {
    pub fn of(batch: &Batch) -> Self {
        Self {
            batch: batch.batch_size(),
            steps: batch.seq_len(),
        }
    }
}

/// Where one tensor sits in a flat parameter buffer, in elements.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub start: usize,
    pub len: usize,
}

impl Slot {
    /// This slot of `buffer` as a binding.
    pub fn bind<'a>(&self, buffer: &'a wgpu::Buffer) -> wgpu::BindingResource<'a> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer,
            offset: 4 * self.start as u64,
            size: std::num::NonZeroU64::new(4 * self.len.max(1) as u64),
        })
    }
}

/// Offsets of the cell's tensors (`Params::tensors` order: W, U, b_ih, b_hh, V, c) in the
/// flat parameter buffers; each starts at a multiple of the device's
/// storage-binding alignment so kernels can bind it alone.
#[derive(Clone, Debug)]
pub(crate) struct ParamLayout {
    pub cell: CellKind,
    pub dims: Dims,
    /// w_hh [g·d, d] (g = `cell.gates()`).
    pub w: Slot,
    /// w_ih [g·d, p].
    pub u: Slot,
    /// b_ih [g·d].
    pub b: Slot,
    /// b_hh [g·d].
    pub b_hh: Slot,
    pub v: Slot,
    pub c: Slot,
    /// The language model's trained embedding table E [V, p], after the head (with its
    /// number of rows V).
    pub embed: Option<(Slot, usize)>,
    /// DTP's reverse layer, after the rest: V_rev [d, d], c_rev \[d\].
    pub rev: Option<[Slot; 2]>,
    pub len: usize,
}

impl ParamLayout {
    /// The layout of a `cell` model of sizes `dims`, with a trained embedding table of
    /// `vocabulary` rows where given, and DTP's reverse layer when `reverse`.
    pub fn new(
        cell: CellKind,
        dims: Dims,
        align_bytes: u32,
        vocabulary: Option<usize>,
        reverse: bool,
    ) -> Self {
        let align = (align_bytes as usize / 4).max(1);
        let Dims {
            input: p,
            hidden: d,
            output: q,
        } = dims;
        let g = cell.gates();
        let mut end = 0;
        let mut slot = |len: usize| {
            let s = Slot { start: end, len };
            end = (end + len.max(1)).next_multiple_of(align);
            s
        };
        let (w, u, b, b_hh) = (slot(g * d * d), slot(g * d * p), slot(g * d), slot(g * d));
        let (v, c) = (slot(q * d), slot(q));
        let embed = vocabulary.map(|rows| (slot(rows * p), rows));
        let rev = reverse.then(|| [slot(d * d), slot(d)]);
        Self {
            cell,
            dims,
            w,
            u,
            b,
            b_hh,
            v,
            c,
            embed,
            rev,
            len: end,
        }
    }

    /// The slots in `Params::tensors` order.
    pub fn slots(&self) -> Vec<Slot> {
        let mut slots = vec![self.w, self.u, self.b, self.b_hh, self.v, self.c];
        slots.extend(self.embed.map(|(slot, _)| slot));
        slots.extend(self.rev.iter().flatten());
        slots
    }

    /// All-zero parameters of this layout's cell and sizes (with an embedding table and a
    /// reverse layer where the layout has them).
    pub fn zeros(&self) -> Params {
        Params {
            dtp: self.rev.map(|_| ReverseLayer::zeros(self.dims.hidden)),
            embedding: self
                .embed
                .map(|(_, rows)| DMatrix::zeros(rows, self.dims.input)),
            ..Params::zeroed(self.cell, self.dims)
        }
    }

    /// Where the tensors the optimizer steps with the learning rate of the other
    /// parameters (the embedding table's among them) end: the reverse layer's, stepped on
    /// their own, come after.
    pub fn forward_len(&self) -> usize {
        self.rev.map_or(self.len, |[w, _]| w.start)
    }

    /// `params` flattened into this layout (padding zero).
    pub fn pack(&self, params: &Params) -> Vec<f32> {
        assert_eq!(params.cell, self.cell, "parameters of another cell");
        assert_eq!(
            params.dtp.is_some(),
            self.rev.is_some(),
            "parameters with and a layout without a reverse layer, or the other way round"
        );
        assert_eq!(
            params.vocabulary(),
            self.embed.map(|(_, rows)| rows),
            "parameters and a layout with different embedding tables"
        );
        let mut out = vec![0.0; self.len];
        for (slot, (_, m)) in self.slots().iter().zip(params.tensors()) {
            out[slot.start..slot.start + slot.len].copy_from_slice(&rows_f32(m));
        }
        out
    }

    /// The tensors back out of a flat buffer.
    pub fn unpack(&self, data: &[f32]) -> Params {
        let mut params = self.zeros();
        for (slot, m) in self.slots().iter().zip(params.tensors_mut()) {
            *m = matrix(
                &data[slot.start..slot.start + slot.len],
                m.nrows(),
                m.ncols(),
            );
        }
        params
    }
}

/// `m` in row-major f32.
pub(crate) fn rows_f32(m: &DMatrix<f64>) -> Vec<f32> {
    m.transpose().iter().map(|&v| v as f32).collect()
}

/// A `rows`×`cols` matrix from row-major f32.
pub(crate) fn matrix(data: &[f32], rows: usize, cols: usize) -> DMatrix<f64> {
    DMatrix::from_row_iterator(rows, cols, data.iter().map(|&v| f64::from(v)))
}

/// Matrices of equal shape, stacked row-major (e.g. the T steps of x).
pub(crate) fn stack(ms: &[DMatrix<f64>]) -> Vec<f32> {
    ms.iter().flat_map(rows_f32).collect()
}

/// The inverse of `stack`.
pub(crate) fn unstack(data: &[f32], rows: usize, cols: usize) -> Vec<DMatrix<f64>> {
    data.chunks_exact((rows * cols).max(1))
        .map(|c| matrix(c, rows, cols))
        .collect()
}

/// Elements of the jacobian sweep's CG buffer for B solves over T steps of d units: the
/// per-step records [T, B, 2], then the solves' state between launches.
pub(crate) fn cg_steps_len(steps: usize, batch: usize, d: usize) -> usize {
    steps * batch * 2 + solve_state_len(batch, d)
}

/// Elements of the state of `n` CG solves of d units between launches (jacobian.wgsl):
/// r and p [n, d] each, and a cursor of 8 words per solve.
pub(crate) fn solve_state_len(n: usize, d: usize) -> usize {
    n * (2 * d + 8)
}

/// The loss as head.wgsl encodes it.
pub(crate) fn loss_code(loss: Loss) -> u32 {
    match loss {
        // The heads at every step run seq_head.wgsl, which has no other loss.
        Loss::CrossEntropy | Loss::CrossEntropySeq => 0,
        Loss::Mse => 1,
    }
}
