//! The two cells of the CPU reference behind one interface, so that an iteration
//! (`iteration`) runs either without knowing which: the forward pass, the gradients from
//! what the backward recursion is given, and the cell linearized for the Jacobian
//! inversion (docs/ALGORITHM.md §1, §2 step 6, §3, §5). Both work on the working layout
//! (`Steps`).
//!
//! Both run on the vector units and the cores, in the working layout (`forward`, `bptt`;
//! `gru`, on the same kernels).

use nalgebra::DMatrix;

use crate::cpu::bptt::bptt_steps;
use crate::cpu::embedding::embedding_grad;
use crate::cpu::forward::forward_steps;
use crate::cpu::gru::{gru_bptt_steps, gru_forward_steps};
use crate::cpu::jacobian::{Cell, GruCell, TanhCell};
use crate::cpu::steps::{Pool, Steps};
use crate::kernel_io::Injection;
use crate::model::{CellKind, Params};

/// Recurrent gradients as a whole `Params` (head left at zero) with ‖e_t‖ for t = 1 … T.
pub struct CellGrads {
    /// ∇ of the cell's tensors; the head's are zero.
    pub params: Params,
    /// ‖e_t‖_F over the batch, the error of the backward recursion.
    pub error_norms: Vec<f64>,
}

/// A forward pass: the hidden states, and what the cell keeps of each step for its
/// backward passes.
pub struct Forward {
    /// h_0 … h_T.
    pub h: Steps,
    /// The GRU's gates r | z | n | hn of steps 1 … T (step t at t − 1, 4d values a
    /// column), which its BPTT and per-gate sweep linearize at; `None` for the tanh RNN.
    pub gates: Option<Steps>,
}

impl Forward {
    /// Hands the buffers to `pool` for the next iteration.
    pub fn recycle(self, pool: &mut Pool) {
        pool.give(self.h);
        if let Some(g) = self.gates {
            pool.give(g);
        }
    }
}

/// A recurrent cell at fixed parameters.
pub trait Recurrence {
    /// The forward pass on the inputs `x`, in buffers from `pool`.
    fn forward(&self, x: &Steps, pool: &mut Pool) -> Forward;

    /// Gradients of the cell's tensors from what `injection` puts into the backward
    /// recursion at the states `h` (and, for the GRU, their gates where the forward pass
    /// kept them: `Forward::gates`; formed again from h if `None`), carried back through
    /// the cell with `through_time`; with a trained embedding table (`Params::embedding`)
    /// and the batch's `tokens`, its gradient too (the gradient flowing into the inputs,
    /// docs/ALGORITHM.md §13).
    fn gradients(
        &self,
        x: &Steps,
        h: (&Steps, Option<&Steps>),
        injection: Injection<Steps>,
        through_time: bool,
        tokens: Option<&DMatrix<u32>>,
        pool: &mut Pool,
    ) -> CellGrads;

    /// The cell linearized at the states `h` (h_0 … h_T) on the inputs `x` (and, for the
    /// GRU, at the gates the forward pass kept; formed again from h if `None`).
    fn linearized<'a>(&'a self, x: &Steps, h: (&'a Steps, Option<&'a Steps>))
        -> Box<dyn Cell + 'a>;
}

/// The cell of `params`.
pub fn recurrence(params: &Params) -> Box<dyn Recurrence + '_> {
    match params.cell {
        CellKind::Tanh => Box::new(TanhRnn(params)),
        CellKind::Gru => Box::new(Gru(params)),
    }
}

/// The tanh RNN of docs/ALGORITHM.md §1.
struct TanhRnn<'a>(&'a Params);

impl Recurrence for TanhRnn<'_> {
    fn forward(&self, x: &Steps, pool: &mut Pool) -> Forward {
        let mut h = pool.take(x.steps() + 1, x.batch(), self.0.dims().hidden);
        forward_steps(self.0, x, &mut h);
        Forward { h, gates: None }
    }

    fn gradients(
        &self,
        x: &Steps,
        (h, _): (&Steps, Option<&Steps>),
        injection: Injection<Steps>,
        through_time: bool,
        tokens: Option<&DMatrix<u32>>,
        pool: &mut Pool,
    ) -> CellGrads {
        let mut delta = pool.take(x.steps(), h.batch(), h.width());
        let g = bptt_steps(self.0, x, h, injection, through_time, &mut delta);
        let mut params = self.0.zeros_like();
        if let (Some(table), Some(ids)) = (&self.0.embedding, tokens) {
            params.embedding = Some(embedding_grad(&self.0.w_ih, &delta, ids, table.nrows()));
        }
        pool.give(delta);
        params.w_hh = g.w_hh;
        params.w_ih = g.w_ih;
        // b_ih and b_hh enter as their sum: each has the sum's gradient.
        params.b_hh = g.b.clone();
        params.b = g.b;
        CellGrads {
            params,
            error_norms: g.error_norms,
        }
    }

    fn linearized<'a>(
        &'a self,
        _x: &Steps,
        (h, _): (&'a Steps, Option<&'a Steps>),
    ) -> Box<dyn Cell + 'a> {
        Box::new(TanhCell::at(self.0, h))
    }
}

/// The GRU of docs/ALGORITHM.md §5, in PyTorch's convention.
struct Gru<'a>(&'a Params);

impl Recurrence for Gru<'_> {
    fn forward(&self, x: &Steps, pool: &mut Pool) -> Forward {
        let d = self.0.dims().hidden;
        let mut h = pool.take(x.steps() + 1, x.batch(), d);
        let mut gates = pool.take(x.steps(), x.batch(), 4 * d);
        gru_forward_steps(self.0, x, &mut h, &mut gates);
        Forward {
            h,
            gates: Some(gates),
        }
    }

    fn gradients(
        &self,
        x: &Steps,
        h: (&Steps, Option<&Steps>),
        injection: Injection<Steps>,
        through_time: bool,
        // `validate::check_embedding` keeps trained embeddings off the GRU.
        _tokens: Option<&DMatrix<u32>>,
        _pool: &mut Pool,
    ) -> CellGrads {
        let g = gru_bptt_steps(self.0, x, h, injection, through_time);
        let mut params = self.0.zeros_like();
        params.w_hh = g.rnn.w_hh;
        params.w_ih = g.rnn.w_ih;
        params.b = g.rnn.b;
        params.b_hh = g.b_hh;
        CellGrads {
            params,
            error_norms: g.rnn.error_norms,
        }
    }

    fn linearized<'a>(
        &'a self,
        x: &Steps,
        (h, gates): (&'a Steps, Option<&'a Steps>),
    ) -> Box<dyn Cell + 'a> {
        Box::new(GruCell::at(self.0, x, h, gates))
    }
}
