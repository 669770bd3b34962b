//! The device a `GpuBackend` runs on (opened on the adapter `adapters` picks): the
//! compiled kernels, and the few helpers every kernel wrapper shares (checked buffer creation, uploads,
//! readback, and turning wgpu validation errors into `anyhow` errors).

use anyhow::{anyhow, Context as _, Result};
use wgpu::util::DeviceExt;

use crate::gpu::adapters::{choose, AdapterChoice};
use crate::gpu::kernel::{self, GruKernels, HistoryKernels, JacobianKernels, Kernels};
use crate::gpu::packing::{self, GruLoop, Packing, TimeLoop};
use crate::gpu::storage::{F16Conversions, Storage};

/// A device and queue, what is known about them, and every compute pipeline the
/// backend uses (compiled once, here).
///
/// # What the device must offer
///
/// Compute shaders (wgpu's `DownlevelFlags::COMPUTE_SHADERS`: Vulkan, Metal and DX12
/// devices have them), and at least these limits — all of them within WebGPU's defaults
/// (`wgpu::Limits::default()`) but one: `dtp_reverse.wgsl` binds 9 storage buffers where
/// WebGPU's default allows 8 (native Vulkan, Metal and DX12 adapters allow far more:
/// lavapipe 32):
///
/// | limit | needed | by |
/// |---|---|---|
/// | `max_storage_buffers_per_shader_stage` | 9 | `dtp_reverse.wgsl`; 8: `gru_bptt.wgsl`, `target_sweep.wgsl` (b_ih and b_hh in one binding), `dtp_targets.wgsl` and `jacobian.wgsl`'s `jacobian_sweep` (others bind 2–7) |
/// | `max_uniform_buffers_per_shader_stage` | 1 | every kernel (its parameters) |
/// | `max_bindings_per_bind_group` | 11 | `jacobian.wgsl` numbers its bindings up to `@binding(10)` |
/// | `max_compute_workgroup_storage_size` | 16 384 B | `forward.wgsl`, `bptt.wgsl`, `target_sweep.wgsl` (2 × [`MAX_HIDDEN`](crate::gpu::MAX_HIDDEN) = 4096 f32 of workgroup memory, whatever d) |
/// | `max_compute_invocations_per_workgroup`, `max_compute_workgroup_size_x` | 256 | most kernels (`matmul.wgsl`: 16 × 16); the time loops use 64–256 per lane, matched to d, within what the device allows |
///
/// The problem size is bounded by the device, not by the crate: every storage buffer is
/// checked against `max_buffer_size` and `max_storage_buffer_binding_size` when it is
/// made (the largest are the histories h and v − h, (T+1)·B·d values each, and for the
/// analytic inversion P, d² values), with an error naming the buffer and the sizes to
/// shrink; launches are checked against `max_compute_workgroups_per_dimension`.
///
/// Optional features, used where the device has them:
/// - `SHADER_F16`: f16 storage (`Storage::F16`) converts with WGSL's `f16` type instead of
///   integer code (same stored words; see [`F16Conversions`]).
/// - `TIMESTAMP_QUERY`: the profiler ([`Profiler`](crate::gpu::Profiler), `tpri bench`)
///   times passes on the device; without it, it times on the host. Training never needs it.
///
/// [`GpuContext::new`] opens the adapter with all of its limits and with those two features
/// where offered. [`GpuContext::from_device`] takes a device as it is and checks nothing up
/// front beyond compiling the kernels: a device below the table's limits fails there
/// (`compiling the compute kernels`, with wgpu's validation message naming the limit, e.g.
/// "Too many bindings of type StorageBuffers …, limit is 8, count was 9. Check the limit
/// `max_storage_buffers_per_shader_stage`" for a device opened with WebGPU's defaults,
/// whatever method it would run), or, for the kernels
/// compiled on first use (the GRU's and the jacobian inversion's, f16 storage's), with the
/// first step that needs them; a buffer too large for the device fails when it is made.
pub struct GpuContext {
    /// The device every buffer and pipeline lives on.
    pub device: wgpu::Device,
    /// The queue work is submitted to.
    pub queue: wgpu::Queue,
    /// Name, backend and driver of the adapter.
    pub info: wgpu::AdapterInfo,
    /// The limits of `device` (what buffer sizes and dispatches are checked against).
    pub limits: wgpu::Limits,
    pub(crate) kernels: Kernels,
}

impl GpuContext {
    /// Opens the adapter `choice` names, with the adapter's full limits (compute needs
    /// big storage buffers more than portability to weaker devices) and native f16
    /// conversions where it has them.
    pub fn new(choice: &AdapterChoice) -> Result<Self> {
        Self::with_f16(choice, F16Conversions::Native)
    }

    /// `new`, with the f16 conversions of f16 storage chosen.
    pub fn with_f16(choice: &AdapterChoice, f16: F16Conversions) -> Result<Self> {
        let adapter = choose(choice)?;
        let info = adapter.get_info();
        // Timestamps let the benchmarks time the device's work without the host's.
        let mut wanted = wgpu::Features::TIMESTAMP_QUERY;
        if f16 == F16Conversions::Native {
            wanted |= wgpu::Features::SHADER_F16;
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("tpri"),
            required_limits: adapter.limits(),
            required_features: adapter.features() & wanted,
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .with_context(|| format!("could not open a device on adapter {}", info.name))?;
        Self::build(device, queue, info)
    }

    /// Runs on a device the caller already has (e.g. next to a renderer). Kernels are
    /// checked against `device.limits()`; the caller's error handler is left alone, since
    /// every operation of this crate runs inside its own error scope.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        let info = device.adapter_info();
        Self::build(device, queue, info)
    }

    fn build(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Result<Self> {
        let limits = device.limits();
        let kernels =
            checked(&device, || Kernels::new(&device)).context("compiling the compute kernels")?;
        Ok(Self {
            device,
            queue,
            info,
            limits,
            kernels,
        })
    }

    /// The kernels that touch a history, for `storage` (the f16 set compiles on first use).
    pub(crate) fn history_kernels(&self, storage: Storage) -> Result<&HistoryKernels> {
        self.checked(|| self.kernels.history(&self.device, storage))
            .with_context(|| format!("compiling the {storage}-storage kernels"))
    }

    /// The tanh RNN's time loop `which` for `storage` packed as `packing` says (compiled on
    /// first use); an error for counts it is not compiled for (`SEQUENCES_PER_WORKGROUP`,
    /// `LANES_PER_UNIT`).
    pub(crate) fn time_loop_kernel(
        &self,
        storage: Storage,
        which: TimeLoop,
        packing: Packing,
    ) -> Result<&wgpu::ComputePipeline> {
        let kernels = self.history_kernels(storage)?;
        let what = which.what();
        let how = format!(
            "{} sequence(s) per workgroup, {} lane(s) per unit, {} invocations per workgroup",
            packing.seqs, packing.lanes, packing.workgroup_size
        );
        self.checked(|| kernels.time_loop(&self.device, which, packing))
            .with_context(|| format!("compiling {what} for {how}"))?
            .ok_or_else(|| anyhow!("{what} is not compiled for {how}"))
    }

    /// The most invocations one workgroup may have on this device (the lesser of
    /// `max_compute_invocations_per_workgroup` and `max_compute_workgroup_size_x`: the
    /// kernels' workgroups are one-dimensional).
    pub fn max_invocations_per_workgroup(&self) -> usize {
        let l = &self.limits;
        l.max_compute_invocations_per_workgroup
            .min(l.max_compute_workgroup_size_x) as usize
    }

    /// jacobian.wgsl's kernels for hidden size `d`, in workgroups matched to it, so that
    /// few invocations sit idle at each of the CG's many barriers (compiled on first use).
    pub(crate) fn jacobian_kernels(&self, d: usize) -> Result<&JacobianKernels> {
        let wg = packing::matched_workgroup_size(d);
        self.checked(|| self.kernels.jacobian(&self.device, wg))
            .with_context(|| format!("compiling the jacobian kernels for workgroups of {wg}"))
    }

    /// The GRU's loop `which` with `packing`'s lanes per unit and workgroup size (compiled
    /// on first use); an error for a count it is not compiled for (`LANES_PER_UNIT`).
    pub(crate) fn gru_loop_kernel(
        &self,
        which: GruLoop,
        packing: Packing,
    ) -> Result<&wgpu::ComputePipeline> {
        let what = which.what();
        let how = format!(
            "{} lane(s) per unit, {} invocations per workgroup",
            packing.lanes, packing.workgroup_size
        );
        self.checked(|| self.kernels.gru_loop(&self.device, which, packing))
            .with_context(|| format!("compiling {what} for {how}"))?
            .ok_or_else(|| anyhow!("{what} is not compiled for {how}"))
    }

    /// The GRU's time loops for hidden size `d`, in workgroups matched to it (compiled on
    /// first use).
    pub(crate) fn gru_kernels(&self, d: usize) -> Result<&GruKernels> {
        let wg = packing::matched_workgroup_size(d);
        self.checked(|| self.kernels.gru(&self.device, wg))
            .with_context(|| format!("compiling the GRU's time loops for workgroups of {wg}"))
    }

    /// The f16 conversions f16 storage uses on this device.
    pub fn f16_conversions(&self) -> F16Conversions {
        if kernel::native_f16(&self.device) {
            F16Conversions::Native
        } else {
            F16Conversions::Integer
        }
    }

    /// `adapter name (backend)`.
    pub fn describe(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// Runs `f` with wgpu's validation and out-of-memory errors captured: they come back
    /// as an `Err` instead of reaching the device's uncaptured-error handler (a panic by default).
    pub fn checked<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        checked(&self.device, f)
    }

    /// A zero-filled storage buffer of `bytes` bytes, after checking the device can hold
    /// and bind it. `what` names it in errors, e.g. `hidden states h [T+1, B, d]`.
    pub fn storage(
        &self,
        what: &str,
        bytes: u64,
        extra: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        let l = &self.limits;
        let limit = l.max_buffer_size.min(l.max_storage_buffer_binding_size);
        if bytes > limit {
            return Err(crate::error::Error::DeviceLimit {
                limit: "max_buffer_size".into(),
                needed: Some(bytes),
                allowed: limit,
                message: format!(
                    "{what} needs {bytes} bytes, more than this device allows for one buffer \
                     ({limit} bytes: max_buffer_size {}, max_storage_buffer_binding_size {}); \
                     use a smaller batch, sequence length or hidden size",
                    l.max_buffer_size, l.max_storage_buffer_binding_size
                ),
            }
            .into());
        }
        // wgpu rejects empty bindings; 4 bytes is the smallest legal one.
        let size = bytes.max(4).next_multiple_of(4);
        self.checked(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(what),
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC
                    | extra,
                mapped_at_creation: false,
            })
        })
    }

    /// A uniform buffer holding `contents`, writable later with `write`.
    pub(crate) fn uniform(&self, what: &str, contents: &[u8]) -> Result<wgpu::Buffer> {
        self.checked(|| {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(what),
                    contents,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                })
        })
    }

    /// Queues a write of `data` at `offset` bytes into `buffer` (applied before the next submit).
    pub(crate) fn write<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, offset: u64, data: &[T]) {
        if !data.is_empty() {
            self.queue
                .write_buffer(buffer, offset, bytemuck::cast_slice(data));
        }
    }

    /// Records work with `record` into one command encoder holding one compute pass, and
    /// submits it. Nothing is waited for.
    pub(crate) fn submit(&self, record: impl FnOnce(&mut wgpu::ComputePass<'_>)) -> Result<()> {
        self.submit_timed(None, record)
    }

    /// `submit`, with the pass's start and end time written into `timer` when given.
    pub(crate) fn submit_timed(
        &self,
        timer: Option<&Timer>,
        record: impl FnOnce(&mut wgpu::ComputePass<'_>),
    ) -> Result<()> {
        self.checked(|| {
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("tpri"),
                });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("tpri"),
                    timestamp_writes: timer.map(|t| wgpu::ComputePassTimestampWrites {
                        query_set: &t.queries,
                        beginning_of_pass_write_index: Some(0),
                        end_of_pass_write_index: Some(1),
                    }),
                });
                record(&mut pass);
            }
            if let Some(t) = timer {
                encoder.resolve_query_set(&t.queries, 0..2, &t.resolved, 0);
            }
            self.queue.submit([encoder.finish()]);
        })
    }

    /// `submit_timed`, then waits for the device: the seconds the pass took by `timer`'s
    /// timestamps, or without one by the host's clock from submission to the end of the wait
    /// (which also counts the driver's overhead: an upper bound).
    pub(crate) fn run_timed(
        &self,
        timer: Option<&Timer>,
        record: impl FnOnce(&mut wgpu::ComputePass<'_>),
    ) -> Result<f64> {
        let start = std::time::Instant::now();
        self.submit_timed(timer, record)?;
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| anyhow!("waiting for the GPU: {e}"))?;
        let wall = start.elapsed().as_secs_f64();
        match timer {
            Some(timer) => self.elapsed(timer),
            None => Ok(wall),
        }
    }

    /// A pass timer, where the device has timestamp queries.
    pub(crate) fn timer(&self) -> Result<Option<Timer>> {
        if !self
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            return Ok(None);
        }
        self.checked(|| Timer {
            queries: self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("pass timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            }),
            resolved: self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("resolved timestamps"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
        })
        .map(Some)
    }

    /// Seconds between the start and end of the last pass `timer` timed; waits for it.
    pub(crate) fn elapsed(&self, timer: &Timer) -> Result<f64> {
        let [start, end]: [u64; 2] = self
            .read(&timer.resolved, 0, 2)?
            .try_into()
            .map_err(|_| anyhow!("expected two timestamps"))?;
        let ns = end.wrapping_sub(start) as f64 * f64::from(self.queue.get_timestamp_period());
        Ok(ns * 1e-9)
    }

    /// Copies `count` values of `buffer` starting at element `start` back to the host,
    /// waiting for all submitted work.
    pub fn read<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
        start: usize,
        count: usize,
    ) -> Result<Vec<T>> {
        let elem = std::mem::size_of::<T>() as u64;
        let bytes = count as u64 * elem;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.checked(|| {
            let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("readback"),
                });
            encoder.copy_buffer_to_buffer(buffer, start as u64 * elem, &staging, 0, bytes);
            self.queue.submit([encoder.finish()]);
            staging
        })?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            // The receiver outlives the poll below; a send cannot fail.
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .context("waiting for the GPU")?;
        rx.recv()
            .context("readback callback never ran")?
            .context("mapping a readback buffer")?;
        let data = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| anyhow!("reading back a buffer: {e:?}"))?;
            bytemuck::pod_collect_to_vec::<u8, T>(&view)
        };
        staging.unmap();
        Ok(data)
    }
}

/// Start and end timestamps of one compute pass (see `GpuContext::submit_timed`).
pub(crate) struct Timer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
}

/// See `GpuContext::checked`; also used before the context exists.
fn checked<T>(device: &wgpu::Device, f: impl FnOnce() -> T) -> Result<T> {
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = f();
    let validation = pollster::block_on(validation.pop());
    let oom = pollster::block_on(oom.pop());
    match validation.or(oom) {
        Some(e) => Err(anyhow!("GPU error: {e}")),
        None => Ok(value),
    }
}
