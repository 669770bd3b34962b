//! The kernels' WGSL sources as compiled (each kernel file with the includes it uses) and
//! the pipeline cache built from them once per device (`Dispatch` launches them).
//!
//! Bind group layouts are derived from the shaders (`layout: None`), so a kernel's bindings
//! are declared once, in its WGSL file.

use std::sync::OnceLock;

use crate::gpu::packing::{
    GruLoop, Packing, TimeLoop, LANES_PER_UNIT, SEQUENCES_PER_WORKGROUP, WORKGROUP_SIZES,
};
use crate::gpu::storage::Storage;

/// `shaders/include/history.wgsl`: the storage of the histories (the `HIST_F16`
/// override), appended to every kernel that touches a history, followed by one of the
/// two files of f16 conversions.
pub const HISTORY_WGSL: &str = include_str!("../../shaders/include/history.wgsl");

/// `shaders/include/f16_bits.wgsl`: f16 conversions as integer code (every adapter).
pub const F16_BITS_WGSL: &str = include_str!("../../shaders/include/f16_bits.wgsl");

/// `shaders/include/f16_native.wgsl`: f16 conversions with WGSL's `f16` type (devices with
/// `SHADER_F16`; the module starts with `enable f16;`).
pub const F16_NATIVE_WGSL: &str = include_str!("../../shaders/include/f16_native.wgsl");

/// `shaders/<file>` with `shaders/include/<include>` appended for each include, in order,
/// each after a newline. Appended, not prepended: WGSL declarations may come in any
/// order, and the kernel's own line numbers in error messages stay right.
macro_rules! compose {
    ($file:literal $(, $include:literal)*) => {
        concat!(
            include_str!(concat!("../../shaders/", $file))
            $(, "\n", include_str!(concat!("../../shaders/include/", $include)))*
        )
    };
}

/// `SHADERS` and `NATIVE_F16_SHADERS` from the table of includes below.
macro_rules! shader_tables {
    (
        $($file:literal => [$($include:literal),*],)*
        history:
        $($h_file:literal => [$($h_include:literal),*],)*
    ) => {
        /// The WGSL sources, by file name, as compiled: each kernel file with its includes
        /// appended, the history kernels' followed by `HISTORY_WGSL` and `F16_BITS_WGSL`
        /// (`tests/shaders.rs` checks that this covers `shaders/` and matches the includes
        /// each kernel names).
        pub const SHADERS: [(&str, &str); 22] = [
            $(($file, compose!($file $(, $include)*)),)*
            $((
                $h_file,
                compose!($h_file $(, $h_include)*, "history.wgsl", "f16_bits.wgsl"),
            ),)*
        ];

        /// The history kernels with the native f16 conversions: what f16 storage compiles on
        /// a device with `SHADER_F16`.
        pub const NATIVE_F16_SHADERS: [(&str, &str); 7] = [
            $((
                $h_file,
                concat!(
                    "enable f16;\n",
                    compose!($h_file $(, $h_include)*, "history.wgsl", "f16_native.wgsl"),
                ),
            ),)*
        ];
    };
}

// The one table of which files of `shaders/include/` each kernel gets, appended after the
// kernel in the order limits, dot, activation, gru, gate_brackets, workgroup_sum, noise,
// targets. Each include's opening comment says what it holds and for which kernels; each
// kernel names the includes it relies on (`include/<name>`), and tests/shaders.rs checks
// this table against both.
// The kernels after `history:` read or write a history: they are compiled once per
// `Storage` and get `include/history.wgsl` and one of the two files of f16 conversions
// after their includes.
shader_tables! {
    "cg_check.wgsl" => ["limits.wgsl"],
    "optimizer.wgsl" => [],
    "transpose.wgsl" => [],
    "split_sum.wgsl" => [],
    "step_probe.wgsl" => ["limits.wgsl"],
    "gru_forward.wgsl" => ["limits.wgsl", "dot.wgsl", "activation.wgsl"],
    "gru_bptt.wgsl" => ["limits.wgsl", "dot.wgsl", "gru.wgsl"],
    "jacobian.wgsl" => [
        "limits.wgsl", "dot.wgsl", "activation.wgsl", "gru.wgsl", "workgroup_sum.wgsl"
    ],
    "gru_per_gate_sweep.wgsl" => [
        "limits.wgsl", "dot.wgsl", "activation.wgsl", "gru.wgsl", "gate_brackets.wgsl"
    ],
    "gru_sweep_bptt.wgsl" => [
        "limits.wgsl", "dot.wgsl", "activation.wgsl", "gru.wgsl", "gate_brackets.wgsl"
    ],
    "seq_head.wgsl" => ["workgroup_sum.wgsl"],
    "dtp_reverse.wgsl" => ["limits.wgsl", "dot.wgsl", "activation.wgsl", "noise.wgsl"],
    "dtp_targets.wgsl" => ["limits.wgsl", "dot.wgsl", "activation.wgsl"],
    "embedding_gather.wgsl" => [],
    "embedding_grad.wgsl" => [],
    history:
    "forward.wgsl" => ["limits.wgsl", "dot.wgsl", "activation.wgsl"],
    "head.wgsl" => [],
    "matmul.wgsl" => [],
    "target_sweep.wgsl" => ["limits.wgsl", "dot.wgsl", "activation.wgsl", "targets.wgsl"],
    "sweep_bptt.wgsl" => ["limits.wgsl", "dot.wgsl", "activation.wgsl", "targets.wgsl"],
    "bptt.wgsl" => ["limits.wgsl", "dot.wgsl"],
    "sum_sq.wgsl" => ["workgroup_sum.wgsl"],
}

/// Every compute pipeline of the backend, compiled once per context. The kernels that
/// read or write a history (h, v − h) exist once per `Storage`: the f32 set is compiled
/// with the context, the f16 set the first time a workspace asks for it (with the native
/// conversions where the device has `SHADER_F16`). The GRU and jacobian kernels read and
/// write f32 histories only (f16 storage is the tanh RNN's analytic inversion only); the
/// jacobian kernels exist once per workgroup size, each compiled on first use.
pub(crate) struct Kernels {
    pub matmul: wgpu::ComputePipeline,
    pub cg_check: wgpu::ComputePipeline,
    pub optimizer: wgpu::ComputePipeline,
    pub sum_sq: wgpu::ComputePipeline,
    pub transpose: wgpu::ComputePipeline,
    /// The second pass of a split reduction (`matmul::reduction`).
    pub split_sum: wgpu::ComputePipeline,
    /// seq_head.wgsl's two entry points (the heads at every step).
    pub softmax_rows: wgpu::ComputePipeline,
    pub step_stats: wgpu::ComputePipeline,
    pub dtp_reverse: wgpu::ComputePipeline,
    pub dtp_targets: wgpu::ComputePipeline,
    pub embedding_gather: wgpu::ComputePipeline,
    pub embedding_grad: wgpu::ComputePipeline,
    f32_history: HistoryKernels,
    f16_history: OnceLock<HistoryKernels>,
    /// jacobian.wgsl per workgroup size (`WORKGROUP_SIZES`), compiled on first use.
    jacobian: [OnceLock<JacobianKernels>; 3],
    /// The GRU's time loops per workgroup size (`WORKGROUP_SIZES`), compiled on first use.
    gru: [OnceLock<GruKernels>; 3],
    /// The GRU's loops that take lanes (`GruLoop`) per count of lanes per unit
    /// (`LANES_PER_UNIT`) and workgroup size (a power of two from 64 to 4096,
    /// `Packing::new`'s), compiled on first use.
    gru_lanes: [[[OnceLock<wgpu::ComputePipeline>; 7]; 5]; 2],
}

/// The entry points of jacobian.wgsl, compiled for one workgroup size.
pub(crate) struct JacobianKernels {
    pub jvp: wgpu::ComputePipeline,
    pub vjp: wgpu::ComputePipeline,
    pub jacobian_sweep: wgpu::ComputePipeline,
    pub inverse_columns: wgpu::ComputePipeline,
}

/// The GRU's per-gate time loops, compiled for one workgroup size (their `WG` override):
/// one sequence and one lane per unit, in a workgroup matched to d (its forward pass and
/// backward recursion, which may have lanes, are `Kernels::gru_loop`'s).
pub(crate) struct GruKernels {
    pub per_gate_sweep: wgpu::ComputePipeline,
    /// The per-gate sweep and the surrogate's backward recursion in one loop.
    pub sweep_bptt: wgpu::ComputePipeline,
}

/// The slot of workgroup size `wg` (one of `WORKGROUP_SIZES`) in a per-size cache.
fn size_slot<T>(slots: &[OnceLock<T>; 3], wg: u32) -> &OnceLock<T> {
    let at = WORKGROUP_SIZES
        .iter()
        .position(|&w| w == wg)
        .expect("a workgroup size of WORKGROUP_SIZES");
    &slots[at]
}

/// Where `packing`'s lanes per unit (in `LANES_PER_UNIT`) and workgroup size (a power of
/// two from 64 to 4096) sit in a per-packing cache; `None` for any other.
fn packing_slots(packing: Packing) -> Option<(usize, usize)> {
    let lanes = LANES_PER_UNIT
        .iter()
        .position(|&l| l as usize == packing.lanes)?;
    let wg = packing.workgroup_size;
    let size =
        (wg.is_power_of_two() && (64..=4096).contains(&wg)).then(|| wg.ilog2() as usize - 6)?;
    Some((lanes, size))
}

/// One time loop's pipelines for one packing: without and with its columns in registers.
type TimeLoopVariants = [OnceLock<wgpu::ComputePipeline>; 2];

/// The pipelines that touch a history, compiled for one storage.
pub(crate) struct HistoryKernels {
    storage: Storage,
    /// Each `TimeLoop` per count of sequences per workgroup (`SEQUENCES_PER_WORKGROUP`),
    /// of lanes per unit (`LANES_PER_UNIT`) and workgroup size (a power of two from 64 to
    /// 4096, `Packing::new`'s) and with or without the columns in registers
    /// (`Packing::registers`), compiled on first use.
    time_loops: [[[[TimeLoopVariants; 7]; 5]; 5]; 4],
    pub head_rows: wgpu::ComputePipeline,
    pub head_params: wgpu::ComputePipeline,
    /// `matmul.wgsl` with its B operand a history (∇W = Δᵀ H).
    pub matmul: wgpu::ComputePipeline,
    /// `sum_sq.wgsl` over a history (‖v_t − h_t‖).
    pub sum_sq: wgpu::ComputePipeline,
}

/// The shader module of `file` from `sources` (`SHADERS` or `NATIVE_F16_SHADERS`).
fn module(device: &wgpu::Device, sources: &[(&str, &str)], file: &str) -> wgpu::ShaderModule {
    let (_, source) = sources
        .iter()
        .find(|(name, _)| *name == file)
        .expect("every kernel file is listed in its source table");
    let descriptor = wgpu::ShaderModuleDescriptor {
        label: Some(file),
        source: wgpu::ShaderSource::Wgsl((*source).into()),
    };
    // Without the loop counters naga adds to every loop by default, so that a driver
    // cannot assume a loop ends: each of the time loops' hot loops would carry one more
    // compare and branch per iteration, which also stands in the way of unrolling them.
    // Bounds checks stay on.
    let checks = wgpu::ShaderRuntimeChecks {
        force_loop_bounding: false,
        ..wgpu::ShaderRuntimeChecks::checked()
    };
    // SAFETY: turning off `force_loop_bounding` requires that no loop of these shaders runs
    // forever. Every `for` loop in `shaders/` counts an integer up or down to a bound fixed
    // before it starts (a size, a step count or an override), by a positive stride; the
    // CG loops of jacobian.wgsl (`while`, `loop`) spend one unit of a fixed budget per
    // pass, or move one time step down, and leave when either runs out.
    unsafe { device.create_shader_module_trusted(descriptor, checks) }
}

/// The pipeline of `entry` in `module` with its overridable constants set to `constants`.
fn pipeline(
    device: &wgpu::Device,
    module: &wgpu::ShaderModule,
    entry: &str,
    constants: &[(&str, f64)],
) -> wgpu::ComputePipeline {
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: None,
        module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants,
            ..Default::default()
        },
        cache: None,
    })
}

/// step_probe.wgsl with `MODE = mode`, compiled on each call: a benchmark's kernel, not an
/// iteration's (`gpu::step_probe`).
pub(crate) fn step_probe(device: &wgpu::Device, mode: u32) -> wgpu::ComputePipeline {
    let module = module(device, &SHADERS, "step_probe.wgsl");
    pipeline(device, &module, "main", &[("MODE", f64::from(mode))])
}

/// The kernel sources of the history kernels for `storage` on `device`: f16 storage uses
/// the native conversions where `device` has `SHADER_F16`.
fn history_sources(
    device: &wgpu::Device,
    storage: Storage,
) -> &'static [(&'static str, &'static str)] {
    if storage == Storage::F16 && native_f16(device) {
        &NATIVE_F16_SHADERS
    } else {
        &SHADERS
    }
}

impl HistoryKernels {
    /// The set for `storage`, with the time loops for one sequence per workgroup.
    fn new(device: &wgpu::Device, storage: Storage) -> Self {
        let c = storage.pipeline_constants();
        let sources = history_sources(device, storage);
        let single = |file: &str| pipeline(device, &module(device, sources, file), "main", c);
        let head = module(device, sources, "head.wgsl");
        Self {
            storage,
            time_loops: Default::default(),
            head_rows: pipeline(device, &head, "head_rows", c),
            head_params: pipeline(device, &head, "head_params", c),
            matmul: single("matmul.wgsl"),
            sum_sq: single("sum_sq.wgsl"),
        }
    }

    /// `which` for `storage` packed as `packing` says.
    fn time_loop_pipeline(
        device: &wgpu::Device,
        storage: Storage,
        which: TimeLoop,
        packing: Packing,
    ) -> wgpu::ComputePipeline {
        let mut c = storage.pipeline_constants().to_vec();
        c.push(("SEQS", packing.seqs as f64));
        c.push(("LANES", packing.lanes as f64));
        c.push(("WG", packing.workgroup_size as f64));
        if which.register_columns() > 0 {
            c.push(("REGISTERS", f64::from(u8::from(packing.registers(which)))));
        }
        let sources = history_sources(device, storage);
        pipeline(device, &module(device, sources, which.file()), "main", &c)
    }

    /// `which` packed as `packing` says (a count of `SEQUENCES_PER_WORKGROUP`, one of
    /// `LANES_PER_UNIT` and a workgroup size `Packing::new` gives), compiled on first use
    /// (inside `GpuContext::checked`); `None` for any other count or size.
    pub fn time_loop(
        &self,
        device: &wgpu::Device,
        which: TimeLoop,
        packing: Packing,
    ) -> Option<&wgpu::ComputePipeline> {
        let seqs = SEQUENCES_PER_WORKGROUP
            .iter()
            .position(|&b| b as usize == packing.seqs)?;
        let (lanes, size) = packing_slots(packing)?;
        let registers = usize::from(packing.registers(which));
        let cell = &self.time_loops[which as usize][seqs][lanes][size][registers];
        Some(cell.get_or_init(|| Self::time_loop_pipeline(device, self.storage, which, packing)))
    }
}

impl Kernels {
    pub fn new(device: &wgpu::Device) -> Self {
        let f32_history = HistoryKernels::new(device, Storage::F32);
        let single = |file: &str| pipeline(device, &module(device, &SHADERS, file), "main", &[]);
        let seq_head = module(device, &SHADERS, "seq_head.wgsl");
        Self {
            softmax_rows: pipeline(device, &seq_head, "softmax_rows", &[]),
            step_stats: pipeline(device, &seq_head, "step_stats", &[]),
            // Operands in f32: the f32 history variants are exactly these kernels.
            matmul: f32_history.matmul.clone(),
            sum_sq: f32_history.sum_sq.clone(),
            cg_check: single("cg_check.wgsl"),
            optimizer: single("optimizer.wgsl"),
            transpose: single("transpose.wgsl"),
            split_sum: single("split_sum.wgsl"),
            dtp_reverse: single("dtp_reverse.wgsl"),
            dtp_targets: single("dtp_targets.wgsl"),
            embedding_gather: single("embedding_gather.wgsl"),
            embedding_grad: single("embedding_grad.wgsl"),
            f32_history,
            f16_history: OnceLock::new(),
            jacobian: Default::default(),
            gru: Default::default(),
            gru_lanes: Default::default(),
        }
    }

    /// jacobian.wgsl's pipelines with `wg` invocations per workgroup (one of
    /// `WORKGROUP_SIZES`), compiled on first use (inside `GpuContext::checked`).
    pub fn jacobian(&self, device: &wgpu::Device, wg: u32) -> &JacobianKernels {
        size_slot(&self.jacobian, wg).get_or_init(|| {
            let module = module(device, &SHADERS, "jacobian.wgsl");
            let c = [("WG", f64::from(wg))];
            JacobianKernels {
                jvp: pipeline(device, &module, "jvp", &c),
                vjp: pipeline(device, &module, "vjp", &c),
                jacobian_sweep: pipeline(device, &module, "jacobian_sweep", &c),
                inverse_columns: pipeline(device, &module, "inverse_columns", &c),
            }
        })
    }

    /// The GRU's time loops with `wg` invocations per workgroup (one of
    /// `WORKGROUP_SIZES`), compiled on first use (inside `GpuContext::checked`).
    pub fn gru(&self, device: &wgpu::Device, wg: u32) -> &GruKernels {
        size_slot(&self.gru, wg).get_or_init(|| {
            let c = [("WG", f64::from(wg))];
            let main = |file: &str| pipeline(device, &module(device, &SHADERS, file), "main", &c);
            GruKernels {
                per_gate_sweep: main("gru_per_gate_sweep.wgsl"),
                sweep_bptt: main("gru_sweep_bptt.wgsl"),
            }
        })
    }

    /// The GRU's loop `which` with `packing`'s lanes per unit (one of `LANES_PER_UNIT`)
    /// and workgroup size (a power of two from 64 to 4096), compiled on first use (inside
    /// `GpuContext::checked`); `None` for any other count or size.
    pub fn gru_loop(
        &self,
        device: &wgpu::Device,
        which: GruLoop,
        packing: Packing,
    ) -> Option<&wgpu::ComputePipeline> {
        let (lanes, size) = packing_slots(packing)?;
        Some(self.gru_lanes[which as usize][lanes][size].get_or_init(|| {
            let c = [
                ("WG", packing.workgroup_size as f64),
                ("LANES", packing.lanes as f64),
            ];
            pipeline(device, &module(device, &SHADERS, which.file()), "main", &c)
        }))
    }

    /// The history kernels for `storage`, compiling the f16 set on first use (the caller
    /// runs this inside `GpuContext::checked`, which reports compilation errors).
    pub fn history(&self, device: &wgpu::Device, storage: Storage) -> &HistoryKernels {
        match storage {
            Storage::F32 => &self.f32_history,
            Storage::F16 => self
                .f16_history
                .get_or_init(|| HistoryKernels::new(device, storage)),
        }
    }
}

/// Whether f16 storage on `device` converts with WGSL's `f16` type (`SHADER_F16` enabled
/// on the device) rather than integer code.
pub(crate) fn native_f16(device: &wgpu::Device) -> bool {
    device.features().contains(wgpu::Features::SHADER_F16)
}
