//! The size and memory model of a problem, the one place that knows it: every size is
//! checked (at least 1, products that fit 64 bits) and the memory a backend will hold is
//! estimated and compared with what the machine has available (Linux's `MemAvailable`)
//! and, for the GPU, with the device's limits — before anything is allocated.
//!
//! Used by training runs (`train::RunConfig::workload`, [`check_host`] and
//! [`crate::backend::Backend::check_workload`]), `tpri trace`, `tpri bench` and the backends.
//!
//! The estimates follow what the backends allocate (docs/PERFORMANCE.md's memory section
//! lists the buffers), rounded up; the GPU's total memory is not known to wgpu, so on the
//! device only the per-buffer limit is checked.

use anyhow::Result;

use crate::config::{Hyper, Inversion, Method};
use crate::error::Error;
use crate::memory::{available_memory, bytes, check_fits, MemoryEstimate};
use crate::model::{CellKind, Dims};

/// The sizes of one problem: a model, the batches it trains on and the held-out set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The recurrent cell.
    pub cell: CellKind,
    /// Input, hidden and output sizes.
    pub dims: Dims,
    /// Sequence length T.
    pub steps: usize,
    /// Sequences per batch B.
    pub batch: usize,
    /// Held-out sequences held at once (0 when there are none).
    pub eval_size: usize,
    /// TP-RI (with its targets and solve) or BPTT.
    pub method: Method,
    /// How many d×d regularized inverses TP-RI forms once per iteration: 1 for
    /// P = (WᵀW + rI)⁻¹Wᵀ (the analytic inversion), 3 for the GRU's per-gate P_g, 0 when
    /// it solves at every step (the jacobian inversion) or for BPTT.
    pub inverses: usize,
    /// Whether the model has an output at every step (`Loss::CrossEntropySeq`): labels
    /// per step, the loss gradient at every state, and the heads' outputs.
    pub every_step: bool,
    /// Rows V of a trained embedding table [V, p] (docs/ALGORITHM.md §13), 0 without one:
    /// V·p more parameters, gradients and optimizer slots, and on the GPU the per-token
    /// sums of δ [V, d].
    pub embedding: usize,
    /// What the messages call each size.
    pub names: &'static FieldNames,
}

/// What the messages of [`Workload`]'s checks call each size: the fields of the API that
/// set it.
#[derive(Debug, PartialEq, Eq)]
pub struct FieldNames {
    /// Input size p.
    pub input: &'static str,
    /// Hidden size d.
    pub hidden: &'static str,
    /// Output size q.
    pub output: &'static str,
    /// Sequence length T.
    pub steps: &'static str,
    /// Batch size B.
    pub batch: &'static str,
    /// Held-out sequences.
    pub eval_size: &'static str,
}

/// The sizes as [`Workload`]'s own fields.
pub const WORKLOAD_NAMES: FieldNames = FieldNames {
    input: "Dims::input",
    hidden: "Dims::hidden",
    output: "Dims::output",
    steps: "Workload::steps",
    batch: "Workload::batch",
    eval_size: "Workload::eval_size",
};

/// The sizes as a training run's settings (`train::RunConfig`) set them.
pub const RUN_CONFIG_NAMES: FieldNames = FieldNames {
    input: "the task's input size",
    hidden: "RunConfig::hidden",
    output: "the task's output size",
    steps: "TaskSpec::seq_len",
    batch: "RunConfig::batch_size",
    eval_size: "RunConfig::eval_size",
};

/// What a GPU allows, as its backend reads it from the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuLimits {
    /// The largest hidden size its kernels take (`gpu::MAX_HIDDEN`).
    pub max_hidden: usize,
    /// The largest storage buffer it makes and binds, in bytes (the smaller of
    /// `max_buffer_size` and `max_storage_buffer_binding_size`).
    pub max_buffer: u64,
    /// Bytes per value of the histories h and v − h: 4 (f32) or 2 (f16).
    pub history_bytes: u64,
}

/// `a · b · …`, `None` on overflow.
fn product(factors: &[u64]) -> Option<u64> {
    factors.iter().try_fold(1u64, |acc, &f| acc.checked_mul(f))
}

/// `a + b + …`, `None` on overflow.
fn sum(terms: &[Option<u64>]) -> Option<u64> {
    terms
        .iter()
        .try_fold(0u64, |acc, &t| t.and_then(|t| acc.checked_add(t)))
}

impl Workload {
    /// The sizes of a problem, named as [`Workload`]'s fields in messages.
    pub fn new(cell: CellKind, dims: Dims, steps: usize, batch: usize, hyper: &Hyper) -> Self {
        Self {
            cell,
            dims,
            steps,
            batch,
            eval_size: 0,
            method: hyper.method,
            inverses: match (hyper.method, hyper.tp.inversion) {
                (Method::Tp, Inversion::Analytic) => 1,
                (Method::Tp, Inversion::PerGate) => 3,
                _ => 0,
            },
            every_step: hyper.loss.every_step(),
            embedding: 0,
            names: &WORKLOAD_NAMES,
        }
    }

    /// This workload with `eval_size` held-out sequences.
    pub fn with_eval_size(self, eval_size: usize) -> Self {
        Self { eval_size, ..self }
    }

    /// This workload with a trained embedding table of `rows` rows where given
    /// (`Params::vocabulary`).
    pub fn with_embedding(self, rows: Option<usize>) -> Self {
        Self {
            embedding: rows.unwrap_or(0),
            ..self
        }
    }

    /// The numbers the parameters hold: the cell's and head's, and a trained embedding
    /// table's; `None` on overflow.
    fn param_count(&self) -> Option<u64> {
        let table = (self.embedding as u64).checked_mul(self.dims.input as u64)?;
        self.dims.param_count(self.cell)?.checked_add(table)
    }

    /// Checks that every size is at least 1 (the held-out set may be empty), naming the
    /// field.
    pub fn check_sizes(&self) -> Result<()> {
        let n = self.names;
        for (field, what, value) in [
            (n.input, "the input size p", self.dims.input),
            (n.hidden, "the hidden size d", self.dims.hidden),
            (n.output, "the output size q", self.dims.output),
            (n.steps, "the sequence length T", self.steps),
            (n.batch, "the batch size B", self.batch),
        ] {
            if value == 0 {
                return Err(
                    Error::setting(field, format!("{what} must be at least 1, got 0")).into(),
                );
            }
        }
        Ok(())
    }

    /// The refusal of sizes whose products overflow.
    fn overflow(&self) -> anyhow::Error {
        Error::DeviceLimit {
            limit: "address space".into(),
            needed: None,
            allowed: u64::MAX,
            message: format!(
                "the sizes {} need more memory than 64 bits can count; use smaller sizes",
                self.named_sizes()
            ),
        }
        .into()
    }

    /// `p = 2 (Dims::input), d = 32 (Dims::hidden), …`.
    fn named_sizes(&self) -> String {
        let n = self.names;
        [
            ("p", self.dims.input, n.input),
            ("d", self.dims.hidden, n.hidden),
            ("q", self.dims.output, n.output),
            ("T", self.steps, n.steps),
            ("B", self.batch, n.batch),
            ("held-out sequences", self.eval_size, n.eval_size),
        ]
        .iter()
        .map(|(letter, value, field)| format!("{letter} = {value} ({field})"))
        .collect::<Vec<_>>()
        .join(", ")
    }

    /// Sizes as u64: p, d, q, T, B, the held-out count, and g·d.
    fn sizes(&self) -> [u64; 7] {
        let Dims {
            input: p,
            hidden: d,
            output: q,
        } = self.dims;
        let g = self.cell.gates() as u64;
        [
            p as u64,
            d as u64,
            q as u64,
            self.steps as u64,
            self.batch as u64,
            self.eval_size as u64,
            g.saturating_mul(d as u64),
        ]
    }

    /// What any backend holds on the host: the parameters and optimizer state (with the
    /// copies read back at log points), one training batch and the held-out set.
    pub fn host_common(&self) -> Result<MemoryEstimate> {
        self.check_sizes()?;
        let [p, _, q, t, b, e, _] = self.sizes();
        let n = self.param_count().ok_or_else(|| self.overflow())?;
        // Outputs at every step: a label per step (and the language model's frozen
        // embedding table [q, p]).
        let every = u64::from(self.every_step);
        let est = (|| {
            Some(MemoryEstimate {
                parameters: product(&[4, n, 8])?,
                optimizer: product(&[4, n, 8])?,
                batch: sum(&[
                    product(&[2, t, b, p, 8]),
                    product(&[b, q, 8]),
                    product(&[every, t, b, 8]),
                    product(&[every, q, p, 8]),
                ])?,
                evaluation: sum(&[
                    product(&[e, t, p, 8]),
                    product(&[e, q, 8]),
                    product(&[every, e, t, 8]),
                ])?,
                ..MemoryEstimate::default()
            })
        })();
        est.ok_or_else(|| self.overflow())
    }

    /// The f64 CPU reference's memory: `host_common` and the histories of an iteration
    /// (states, targets, backward errors; the GRU's gates), and the matrices of the solves
    /// (P's, each P_g's, or the per-step solves').
    pub fn cpu_estimate(&self) -> Result<MemoryEstimate> {
        let common = self.host_common()?;
        let [_, d, q, t, b, _, gd] = self.sizes();
        // tanh: h, v, δ, e and work space; the GRU adds r, z, n, hn and dgh, dgi.
        let per_state = match (self.cell, self.method) {
            (CellKind::Gru, _) => 16,
            // DTP adds h̃, F(h̃) and the reverse layer's δ over all T·B columns.
            (CellKind::Tanh, Method::Dtp) => 9,
            (CellKind::Tanh, _) => 6,
        };
        // Outputs at every step: the gradients g_t, and one step's outputs and ∂ℓ/∂z.
        let every = u64::from(self.every_step);
        let tp = self.method == Method::Tp;
        let est = (|| {
            Some(MemoryEstimate {
                histories: sum(&[
                    product(&[per_state + every, t.checked_add(1)?, b, d, 8]),
                    product(&[every, 2, b, q, 8]),
                ])?,
                solver: match (tp, self.inverses) {
                    (false, _) => 0,
                    (true, 0) => product(&[8, b, gd, 8])?,
                    // Each solve's four d×d matrices, and the inverses it leaves.
                    (true, n) => product(&[n as u64 + 4, d, d, 8])?,
                },
                ..common
            })
        })();
        est.filter(|e| e.total() < u64::MAX)
            .ok_or_else(|| self.overflow())
    }

    /// Checks the sizes and that the CPU reference's estimate fits the memory available.
    pub fn check_cpu(&self) -> Result<MemoryEstimate> {
        let est = self.cpu_estimate()?;
        check_fits(&self.describe(), &est, available_memory())?;
        Ok(est)
    }

    /// The largest buffers of the GPU backend (name, bytes) and its device memory: the
    /// parameter buffers (parameters, gradients, slots; Wᵀ and Pᵀ), P's CG buffers (and
    /// the per-gate inversion's W_g, W_gᵀ, P_g and stacked [P_gᵀ; W]), and three workspaces of
    /// histories (the training one and two for evaluation batches).
    pub fn gpu_buffers(
        &self,
        gpu: &GpuLimits,
    ) -> Result<(Vec<(&'static str, u64)>, MemoryEstimate)> {
        self.check_sizes()?;
        let [p, d, q, t, b, _, gd] = self.sizes();
        let n = self.param_count().ok_or_else(|| self.overflow())?;
        let gru = self.cell == CellKind::Gru;
        let made = (|| {
            let padded = d.checked_add(d % 2)?;
            let history = product(&[t.checked_add(1)?, b, padded, gpu.history_bytes])?;
            let dtp_state = if self.method == Method::Dtp {
                product(&[t, b, d, 4])?
            } else {
                4
            };
            let mut buffers = vec![
                ("inputs x [T, B, p]", product(&[t, b, p, 4])?),
                ("hidden states h [T+1, B, d]", history),
                ("target offsets v − h [T+1, B, d]", history),
                ("backward recursion δ [T, B, g·d]", product(&[t, b, gd, 4])?),
                ("backward errors e [T, B, d]", product(&[t, b, d, 4])?),
                (
                    "GRU gates [T, B, 4d]",
                    if gru { product(&[t, b, 4, d, 4])? } else { 4 },
                ),
                (
                    "GRU input-side δ [T, B, 3d]",
                    if gru { product(&[t, b, gd, 4])? } else { 4 },
                ),
                ("per-step CG record [T, B, 2]", product(&[t, b, 2, 4])?),
                ("DTP's reverse-layer δ [T, B, d]", dtp_state),
                ("DTP's states F(h̃) [T, B, d]", dtp_state),
                ("Wᵀ [d, g·d]", product(&[gd, d, 4])?),
                ("Pᵀ [d, d]", product(&[d, d, 4])?),
                ("parameters", product(&[n, 4])?),
            ];
            if self.every_step {
                let k = logit_block_steps(self.steps, self.batch, self.dims.output, gpu.max_buffer)
                    as u64;
                buffers.splice(
                    10..10,
                    [
                        (
                            "per-step loss gradients g [T, B, d]",
                            product(&[t, b, d, 4])?,
                        ),
                        (
                            "outputs of a block of steps [k·B, q]",
                            product(&[k, b, q, 4])?,
                        ),
                        ("per-step head statistics [T·B, 2]", product(&[t, b, 2, 4])?),
                        ("Vᵀ [d, q]", product(&[d, q, 4])?),
                    ],
                );
            }
            let in_workspace = if self.every_step { 14 } else { 10 };
            let workspace = sum(&buffers[..in_workspace]
                .iter()
                .map(|&(_, b)| Some(b))
                .collect::<Vec<_>>())?;
            // A trained embedding table's per-token sums of δ [V, d], token ids and their
            // index, in every workspace.
            let v = self.embedding as u64;
            let embedding = if v > 0 {
                buffers.push(("per-token sums of δ [V, d]", product(&[v, d, 4])?));
                sum(&[
                    product(&[v, d, 4]),
                    product(&[v.checked_add(1)?, 4]),
                    product(&[2, t, b, 4]),
                ])?
            } else {
                0
            };
            let workspace = workspace.checked_add(embedding)?;
            let device = MemoryEstimate {
                parameters: sum(&[
                    product(&[2, n, 4]),
                    product(&[gd, d, 4]),
                    product(&[d, d, 4]),
                ])?,
                optimizer: product(&[2, n, 4])?,
                // P and its CG's record; per gate W_g, W_gᵀ, P_g, and the stacked P_gᵀ
                // with W below them (the GRU's fused backward loop reads both).
                solver: product(&[if self.inverses == 3 { 18 } else { 5 }, d, d, 4])?,
                histories: product(&[3, workspace])?,
                ..MemoryEstimate::default()
            };
            Some((buffers, device))
        })();
        made.filter(|(_, e)| e.total() < u64::MAX)
            .ok_or_else(|| self.overflow())
    }

    /// Checks the sizes against the GPU's limits — the kernels' largest hidden size
    /// first, then every buffer against the device's largest — and the host's share
    /// (`host_common`, and a trace's states read back in f64) against the memory
    /// available. Returns the device's estimate.
    pub fn check_gpu(&self, gpu: &GpuLimits) -> Result<MemoryEstimate> {
        let d = self.dims.hidden;
        if d > gpu.max_hidden {
            return Err(Error::DeviceLimit {
                limit: "MAX_HIDDEN".into(),
                needed: Some(d as u64),
                allowed: gpu.max_hidden as u64,
                message: format!(
                    "{} = {d} exceeds the GPU kernels' limit of {} (they keep one d-vector in \
                     workgroup memory); use the CPU backend or a smaller hidden size",
                    self.names.hidden, gpu.max_hidden
                ),
            }
            .into());
        }
        let (buffers, device) = self.gpu_buffers(gpu)?;
        if let Some(&(what, size)) = buffers.iter().max_by_key(|&&(_, size)| size) {
            if size > gpu.max_buffer {
                return Err(Error::DeviceLimit {
                    limit: "max_buffer_size".into(),
                    needed: Some(size),
                    allowed: gpu.max_buffer,
                    message: format!(
                        "{} on the GPU: its {what} needs {}, more than this device allows for one \
                         buffer ({}: the smaller of max_buffer_size and \
                         max_storage_buffer_binding_size); use a smaller batch, sequence length \
                         or hidden size",
                        self.describe(),
                        bytes(size),
                        bytes(gpu.max_buffer)
                    ),
                }
                .into());
            }
        }
        let common = self.host_common()?;
        let [_, d, _, t, b, _, _] = self.sizes();
        let host = MemoryEstimate {
            histories: product(&[2, t.saturating_add(1), b, d, 8])
                .ok_or_else(|| self.overflow())?,
            ..common
        };
        check_fits(
            &format!("{} (on the host)", self.describe()),
            &host,
            available_memory(),
        )?;
        Ok(device)
    }

    /// `T = 30, B = 20, p = 2, d = 32, q = 1 (tanh RNN, TP-RI), 100 held-out sequences`.
    pub fn describe(&self) -> String {
        let cell = match self.cell {
            CellKind::Tanh => "tanh RNN",
            CellKind::Gru => "GRU",
        };
        let method = match self.method {
            Method::Tp => "TP-RI",
            Method::Bp => "BPTT",
            Method::Dtp => "DTP",
        };
        let held_out = match self.eval_size {
            0 => String::new(),
            e => format!(", {e} held-out sequences"),
        };
        format!(
            "T = {}, B = {}, p = {}, d = {}, q = {} ({cell}, {method}){held_out}",
            self.steps, self.batch, self.dims.input, self.dims.hidden, self.dims.output
        )
    }
}

/// The most bytes the GPU's outputs of a block of steps take (the heads at every step,
/// docs/ALGORITHM.md §13): B·T·q values at once would be 1.3 GB at the published
/// language model's size.
pub const LOGIT_BLOCK_BYTES: u64 = 256 << 20;

/// How many steps the GPU's heads at every step take at once: as many as fit
/// `LOGIT_BLOCK_BYTES` and the device's largest buffer `max_buffer`, at least one (a
/// step larger than the buffer is refused by the buffer check), at most all T.
pub fn logit_block_steps(steps: usize, batch: usize, outputs: usize, max_buffer: u64) -> usize {
    let per_step = (batch as u64)
        .saturating_mul(outputs as u64)
        .saturating_mul(4);
    let budget = LOGIT_BLOCK_BYTES.min(max_buffer);
    let fit = budget / per_step.max(1);
    usize::try_from(fit)
        .unwrap_or(usize::MAX)
        .clamp(1, steps.max(1))
}

/// `w`'s share of the host that every backend holds, against the memory available.
pub fn check_host(w: &Workload) -> Result<MemoryEstimate> {
    let est = w.host_common()?;
    check_fits(&w.describe(), &est, available_memory())?;
    Ok(est)
}
