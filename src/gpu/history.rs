//! A history on the device — the hidden states h or the target offsets v − h, [T+1, B, d] —
//! in its `Storage` (the host side of `shaders/include/history.wgsl`): allocation, upload,
//! readback and poisoning.

use anyhow::Result;
use half::f16;
use nalgebra::DMatrix;

use crate::gpu::context::GpuContext;
use crate::gpu::storage::Storage;

/// A history [steps, B, d] on the device in a given storage, rows padded as
/// `Storage::row_len` says; values stored multiplied by `scale`.
pub(crate) struct History {
    pub buffer: wgpu::Buffer,
    pub storage: Storage,
    pub steps: usize,
    pub batch: usize,
    pub hidden: usize,
    /// The stored values are the true ones times this power of two.
    pub scale: f32,
}

/// An f16 NaN pair: what `poison` fills f16 histories with.
const F16_NAN_PAIR: u32 = 0x7e00_7e00;

impl History {
    /// A zero-filled history; `what` names it in errors.
    pub fn new(
        ctx: &GpuContext,
        what: &str,
        storage: Storage,
        [steps, batch, hidden]: [usize; 3],
        scale: f32,
    ) -> Result<Self> {
        let bytes = (steps * batch * storage.row_len(hidden) * storage.bytes()) as u64;
        let label = format!("{what} [{steps}, B={batch}, d={hidden}] in {storage}");
        Ok(Self {
            buffer: ctx.storage(&label, bytes, wgpu::BufferUsages::empty())?,
            storage,
            steps,
            batch,
            hidden,
            scale,
        })
    }

    /// Elements (padding included) of one step: B rows.
    pub fn step_len(&self) -> usize {
        self.batch * self.storage.row_len(self.hidden)
    }

    /// The whole buffer as a binding.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        self.buffer.as_entire_binding()
    }

    /// Encodes matrices B×d, one per step, as stored words (scaled, rounded, padded).
    fn encode(&self, steps: &[DMatrix<f64>]) -> Vec<u32> {
        let scale = f64::from(self.scale);
        let values = steps.iter().flat_map(|m| {
            assert_eq!(m.shape(), (self.batch, self.hidden), "history step shape");
            (0..m.nrows()).flat_map(move |r| {
                let pad = self.storage.row_len(self.hidden) - self.hidden;
                m.row(r)
                    .iter()
                    .map(move |&v| v * scale)
                    .chain(std::iter::repeat_n(0.0, pad))
                    .collect::<Vec<_>>()
            })
        });
        match self.storage {
            Storage::F32 => values.map(|v| (v as f32).to_bits()).collect(),
            Storage::F16 => {
                let halves: Vec<u16> = values.map(|v| f16::from_f64(v).to_bits()).collect();
                halves
                    .chunks_exact(2)
                    .map(|p| u32::from(p[0]) | (u32::from(p[1]) << 16))
                    .collect()
            }
        }
    }

    /// Words per step.
    fn step_words(&self) -> usize {
        self.step_len() * self.storage.bytes() / 4
    }

    /// Queues a write of `steps` (each B×d) from step `first` on.
    pub fn write(&self, ctx: &GpuContext, first: usize, steps: &[DMatrix<f64>]) {
        let offset = (first * self.step_words() * 4) as u64;
        ctx.write(&self.buffer, offset, &self.encode(steps));
    }

    /// Reads `count` steps from step `first` on, as B×d matrices of the true values.
    pub fn read(&self, ctx: &GpuContext, first: usize, count: usize) -> Result<Vec<DMatrix<f64>>> {
        let words: Vec<u32> = ctx.read(
            &self.buffer,
            first * self.step_words(),
            count * self.step_words(),
        )?;
        let values: Vec<f64> = match self.storage {
            Storage::F32 => words
                .iter()
                .map(|&w| f64::from(f32::from_bits(w)))
                .collect(),
            Storage::F16 => words
                .iter()
                .flat_map(|&w| [w as u16, (w >> 16) as u16])
                .map(|b| f16::from_bits(b).to_f64())
                .collect(),
        };
        let (b, d) = (self.batch, self.hidden);
        let row_len = self.storage.row_len(d);
        let scale = f64::from(self.scale);
        Ok(values
            .chunks_exact((b * row_len).max(1))
            .take(count)
            .map(|step| DMatrix::from_fn(b, d, |r, c| step[r * row_len + c] / scale))
            .collect())
    }

    /// Fills the whole history with NaN (see `iteration::poison`), padding included.
    pub fn poison(&self, ctx: &GpuContext) {
        let words = self.steps * self.step_words();
        let nan = match self.storage {
            Storage::F32 => f32::NAN.to_bits(),
            Storage::F16 => F16_NAN_PAIR,
        };
        ctx.write(&self.buffer, 0, &vec![nan; words]);
    }
}
