//! The working layout of the CPU reference, its one matrix product, and how the
//! recurrences share the cores.
//!
//! The public functions take and return one B×(size) matrix per step (sequences as rows,
//! docs/ALGORITHM.md notation). Inside, every per-step quantity of a batch (h, v, δ, x) lives in one
//! [`Steps`]: a column-major `width × (steps·B)` matrix whose column `t·B + i` is the vector
//! of sequence i at step t. This layout is what makes the reference fast without making it
//! obscure:
//! - a step is one contiguous `width × B` block, so `W h_{t−1}` for the whole batch is one
//!   product `W · H_{t−1}` with no copies or transposes;
//! - all steps together are one matrix, so the sums over steps and sequences of the
//!   gradients, `∇W = Σ_t δ_t h_{t−1}ᵀ`, become one large product `Δ H_prevᵀ` instead of T
//!   small ones (and `U x_t + b` for all steps is one product before the recurrence);
//! - sequences never mix in a recurrence, so each core runs the whole recurrence on its own
//!   group of sequences ([`StepsPart`]), with no synchronisation between steps.
//!
//! Determinism: every number is computed by the same arithmetic in the same order whatever
//! the grouping. Products go straight to `matrixmultiply`, whose result for one entry of C
//! depends only on the order of the sum over k (fixed), not on how many rows or columns
//! are computed together; elementwise work is per entry; sums across sequences (norms) are
//! formed per sequence and then added in sequence order. So the results do not depend on
//! the number of cores, and two runs of the same build agree bit for bit.

use std::ops::Range;

use nalgebra::{DMatrix, DMatrixView};

use crate::cpu::simd::step_product;

/// Per-step vectors of one width for a batch: column `t·batch + i` of `data`
/// (`width × (steps·batch)`, column-major) belongs to sequence i at step t.
#[derive(Clone, Debug, PartialEq)]
pub struct Steps {
    /// width × (steps · batch), column-major: each column one sequence at one step.
    pub data: DMatrix<f64>,
    batch: usize,
    steps: usize,
}

impl Steps {
    /// All zeros.
    pub fn zeros(steps: usize, batch: usize, width: usize) -> Self {
        Self {
            data: DMatrix::zeros(width, steps * batch),
            batch,
            steps,
        }
    }

    /// From one B×width matrix per step (the public layout). All must have `batch` rows
    /// (given separately so that zero steps still know their batch size).
    pub fn from_rows(mats: &[DMatrix<f64>], batch: usize, width: usize) -> Self {
        let mut s = Self::zeros(mats.len(), batch, width);
        for (t, m) in mats.iter().enumerate() {
            assert_eq!(m.shape(), (batch, width), "step {t} has the wrong shape");
            s.step_mut(t).copy_from_slice(m.transpose().as_slice());
        }
        s
    }

    /// Back to one B×width matrix per step.
    pub fn to_rows(&self) -> Vec<DMatrix<f64>> {
        (0..self.steps()).map(|t| self.rows_at(t)).collect()
    }

    /// Step t as a B×width matrix (the public layout).
    pub fn rows_at(&self, t: usize) -> DMatrix<f64> {
        DMatrixView::from_slice(self.step(t), self.width(), self.batch).transpose()
    }

    /// The width of each row (d for states, p for inputs).
    pub fn width(&self) -> usize {
        self.data.nrows()
    }

    /// Number of steps held.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Number of sequences B.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Step t: a column-major `width × batch` block.
    pub fn step(&self, t: usize) -> &[f64] {
        let n = self.width() * self.batch;
        &self.data.as_slice()[t * n..(t + 1) * n]
    }

    /// Step `t`, all sequences, to write.
    pub fn step_mut(&mut self, t: usize) -> &mut [f64] {
        let n = self.width() * self.batch;
        &mut self.data.as_mut_slice()[t * n..(t + 1) * n]
    }

    /// The sequences `seqs` of step t: a column-major `width × seqs.len()` block.
    pub fn at(&self, t: usize, seqs: &Range<usize>) -> &[f64] {
        let w = self.width();
        &self.step(t)[seqs.start * w..seqs.end * w]
    }

    /// Steps `steps` of every sequence, as one `width × (steps.len()·batch)` block.
    pub fn span(&self, steps: Range<usize>) -> &[f64] {
        let n = self.width() * self.batch;
        &self.data.as_slice()[steps.start * n..steps.end * n]
    }

    /// Splits the sequences into the disjoint `groups` (ascending, covering 0..batch), each
    /// with mutable access to its columns at every step.
    pub fn parts_mut(&mut self, groups: &[Range<usize>]) -> Vec<StepsPart<'_>> {
        let w = self.width();
        let n = w * self.batch;
        let steps = self.steps();
        let mut parts: Vec<StepsPart> = groups
            .iter()
            .map(|g| StepsPart {
                blocks: Vec::with_capacity(steps),
                seqs: g.clone(),
            })
            .collect();
        let mut rest = self.data.as_mut_slice();
        for _ in 0..steps {
            let (mut block, tail) = rest.split_at_mut(n);
            rest = tail;
            for part in &mut parts {
                let (mine, others) = block.split_at_mut(part.seqs.len() * w);
                part.blocks.push(mine);
                block = others;
            }
        }
        parts
    }
}

/// Spare [`Steps`] buffers kept from one iteration to the next. At the paper's size each
/// of h, v and δ is 10 MB; fresh ones cost more than the arithmetic of a time loop
/// (the allocator returns them to the system, and every page faults in again zeroed).
#[derive(Debug, Default)]
pub struct Pool(Vec<Steps>);

impl Pool {
    /// A buffer of this shape with unspecified contents: a spare one if there is one,
    /// else zeros. Whoever takes it writes every entry.
    pub fn take(&mut self, steps: usize, batch: usize, width: usize) -> Steps {
        let fits = |s: &Steps| s.steps == steps && s.batch == batch && s.width() == width;
        match self.0.iter().position(fits) {
            Some(i) => self.0.swap_remove(i),
            None => Steps::zeros(steps, batch, width),
        }
    }

    /// Keeps `s` for a later `take` (a few at most: one iteration uses three).
    pub fn give(&mut self, s: Steps) {
        const KEPT: usize = 4;
        if self.0.len() == KEPT {
            self.0.remove(0);
        }
        self.0.push(s);
    }
}

/// One group of sequences of a [`Steps`], at every step, owned by one thread.
pub struct StepsPart<'a> {
    blocks: Vec<&'a mut [f64]>,
    /// Which sequences of the batch.
    pub seqs: Range<usize>,
}

impl StepsPart<'_> {
    /// Step t of these sequences: a column-major `width × seqs.len()` block.
    pub fn step_mut(&mut self, t: usize) -> &mut [f64] {
        self.blocks[t]
    }

    /// Step `read` to read and step `write` to write (`read ≠ write`).
    pub fn pair_mut(&mut self, read: usize, write: usize) -> (&[f64], &mut [f64]) {
        assert_ne!(read, write);
        if read < write {
            let (lo, hi) = self.blocks.split_at_mut(write);
            (lo[read], hi[0])
        } else {
            let (lo, hi) = self.blocks.split_at_mut(read);
            (hi[0], lo[write])
        }
    }
}

/// Splits `0..count` (sequences of a recurrence, columns of a product) into contiguous
/// ascending groups, one per core. `work` (multiply-adds in all) keeps small problems on
/// one thread: starting one costs about as much as a million multiply-adds.
pub fn core_groups(count: usize, work: usize) -> Vec<Range<usize>> {
    const MIN_WORK_PER_THREAD: usize = 1 << 20;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = cores.min(count).min(work / MIN_WORK_PER_THREAD).max(1);
    (0..n).map(|k| k * count / n..(k + 1) * count / n).collect()
}

/// Runs `work` on every item at once, each on its own scoped thread (the first on the
/// calling thread), and returns when all are done.
pub fn in_parallel<T: Send>(items: Vec<T>, work: impl Fn(T) + Sync) {
    let work = &work;
    std::thread::scope(|s| {
        let mut items = items.into_iter();
        let first = items.next();
        for item in items {
            s.spawn(move || work(item));
        }
        if let Some(item) = first {
            work(item);
        }
    });
}

/// A read-only matrix in a slice with any strides: entry (i, j) at `i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    data: &'a [f64],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// A column-major `rows × cols` matrix.
    pub fn cols(data: &'a [f64], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols);
        Self {
            data,
            rows,
            cols,
            rs: 1,
            cs: rows,
        }
    }

    /// All of `m`.
    pub fn of(m: &'a DMatrix<f64>) -> Self {
        Self::cols(m.as_slice(), m.nrows(), m.ncols())
    }

    /// The transpose, without a copy.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Rows `r` only.
    pub fn rows(self, r: Range<usize>) -> Self {
        assert!(r.start <= r.end && r.end <= self.rows);
        let data = if r.is_empty() {
            &self.data[..0]
        } else {
            &self.data[r.start * self.rs..]
        };
        Self {
            data,
            rows: r.len(),
            ..self
        }
    }

    /// True when every entry lies inside `data` (what makes `gemm` safe).
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `C ← α A B + β C` for a column-major C of `a.rows × b.cols` in `c` (β = 0 ignores what
/// `c` held). Every product of the reference goes through here, to `matrixmultiply`
/// (nalgebra's own products allocate their result and switch algorithm by size, which would
/// make a sequence's numbers depend on how many are computed together).
pub fn gemm(alpha: f64, a: Mat, b: Mat, beta: f64, c: &mut [f64]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions differ");
    assert_eq!(c.len(), m * n, "gemm: C has the wrong size");
    assert!(
        a.in_bounds() && b.in_bounds(),
        "gemm: operand out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: A and B lie inside their slices (checked above), C is exactly m×n
    // column-major in an exclusively borrowed slice, so nothing aliases and nothing
    // outside the slices is touched.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            1,
            m as isize,
        );
    }
}

/// `C ← A X (+ C if accumulate)` for a column-major `x` and `c`, by whichever product
/// suits the number of columns: a few (the columns of one time step, a per-step solve)
/// go to `step_product`, which reads A in place; many (forming P) to the packed,
/// cache-blocked `gemm`, whose packing then pays for itself.
pub fn product(a: &DMatrix<f64>, x: &[f64], accumulate: bool, c: &mut [f64]) {
    const FEW_COLUMNS: usize = 32;
    let k = a.ncols();
    let n = x.len().checked_div(k).unwrap_or(0);
    if n <= FEW_COLUMNS {
        step_product(a.as_slice(), a.nrows(), x, accumulate, c);
    } else {
        let beta = if accumulate { 1.0 } else { 0.0 };
        gemm(1.0, Mat::of(a), Mat::cols(x, k, n), beta, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips_and_parts_cover_the_batch() {
        let mats: Vec<DMatrix<f64>> = (0..3)
            .map(|t| DMatrix::from_fn(4, 2, |i, j| (100 * t + 10 * i + j) as f64))
            .collect();
        let mut s = Steps::from_rows(&mats, 4, 2);
        assert_eq!(s.to_rows(), mats);
        assert_eq!(s.at(1, &(2..3)), &[120.0, 121.0]);
        let mut parts = s.parts_mut(&[0..1, 1..4]);
        assert_eq!(
            parts[1].step_mut(2),
            &[210.0, 211.0, 220.0, 221.0, 230.0, 231.0]
        );
        let (read, write) = parts[0].pair_mut(2, 0);
        write.copy_from_slice(read);
        assert_eq!(s.rows_at(0)[(0, 1)], 201.0);
    }

    #[test]
    fn gemm_matches_nalgebra_with_transposes() {
        let a = DMatrix::from_fn(3, 5, |i, j| (i * 5 + j) as f64 - 4.0);
        let b = DMatrix::from_fn(4, 5, |i, j| (i + 2 * j) as f64 * 0.5);
        let mut c = DMatrix::from_element(3, 4, 1.0);
        gemm(2.0, Mat::of(&a), Mat::of(&b).t(), 1.0, c.as_mut_slice());
        assert_eq!(
            c,
            &a * b.transpose() * 2.0 + DMatrix::from_element(3, 4, 1.0)
        );
        let mut r = vec![0.0; 2 * 4];
        gemm(1.0, Mat::of(&a).rows(1..3), Mat::of(&b).t(), 0.0, &mut r);
        assert_eq!(r, (a.rows(1, 2) * b.transpose()).as_slice());
    }
}
