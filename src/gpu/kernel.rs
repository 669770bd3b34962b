//! The pipeline cache and the bind-group/dispatch boilerplate every kernel wrapper shares.
//!
//! Bind group layouts are derived from the shaders (`layout: None`), so a kernel's bindings
//! are declared once, in its WGSL file; the wrappers only say which buffer goes where.
//! Binding 0 of every kernel is its uniform block of sizes and settings.

use anyhow::Result;

use crate::gpu::context::GpuContext;

/// The WGSL sources, by file name (`tests/shaders.rs` checks this covers `shaders/`).
pub const SHADERS: [(&str, &str); 14] = [
    ("forward.wgsl", include_str!("../../shaders/forward.wgsl")),
    ("head.wgsl", include_str!("../../shaders/head.wgsl")),
    ("matmul.wgsl", include_str!("../../shaders/matmul.wgsl")),
    ("cg_init.wgsl", include_str!("../../shaders/cg_init.wgsl")),
    (
        "cg_update.wgsl",
        include_str!("../../shaders/cg_update.wgsl"),
    ),
    ("cg_check.wgsl", include_str!("../../shaders/cg_check.wgsl")),
    (
        "target_sweep.wgsl",
        include_str!("../../shaders/target_sweep.wgsl"),
    ),
    ("bptt.wgsl", include_str!("../../shaders/bptt.wgsl")),
    (
        "optimizer.wgsl",
        include_str!("../../shaders/optimizer.wgsl"),
    ),
    ("sum_sq.wgsl", include_str!("../../shaders/sum_sq.wgsl")),
    (
        "transpose.wgsl",
        include_str!("../../shaders/transpose.wgsl"),
    ),
    (
        "gru_forward.wgsl",
        include_str!("../../shaders/gru_forward.wgsl"),
    ),
    ("gru_bptt.wgsl", include_str!("../../shaders/gru_bptt.wgsl")),
    ("jacobian.wgsl", include_str!("../../shaders/jacobian.wgsl")),
];

/// Every compute pipeline of the backend, compiled once per context.
pub(crate) struct Kernels {
    pub forward: wgpu::ComputePipeline,
    pub head_rows: wgpu::ComputePipeline,
    pub head_params: wgpu::ComputePipeline,
    pub matmul: wgpu::ComputePipeline,
    pub cg_init: wgpu::ComputePipeline,
    pub cg_update: wgpu::ComputePipeline,
    pub cg_check: wgpu::ComputePipeline,
    pub target_sweep: wgpu::ComputePipeline,
    pub bptt: wgpu::ComputePipeline,
    pub optimizer: wgpu::ComputePipeline,
    pub sum_sq: wgpu::ComputePipeline,
    pub transpose: wgpu::ComputePipeline,
    pub gru_forward: wgpu::ComputePipeline,
    pub gru_bptt: wgpu::ComputePipeline,
    pub jvp: wgpu::ComputePipeline,
    pub vjp: wgpu::ComputePipeline,
    pub jacobian_sweep: wgpu::ComputePipeline,
}

impl Kernels {
    pub fn new(device: &wgpu::Device) -> Self {
        let module = |file: &str| {
            let (_, source) = SHADERS
                .iter()
                .find(|(name, _)| *name == file)
                .expect("every kernel file is listed in SHADERS");
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(file),
                source: wgpu::ShaderSource::Wgsl((*source).into()),
            })
        };
        let pipeline = |module: &wgpu::ShaderModule, entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let single = |file: &str| pipeline(&module(file), "main");
        let head = module("head.wgsl");
        let jacobian = module("jacobian.wgsl");
        Self {
            forward: single("forward.wgsl"),
            head_rows: pipeline(&head, "head_rows"),
            head_params: pipeline(&head, "head_params"),
            matmul: single("matmul.wgsl"),
            cg_init: single("cg_init.wgsl"),
            cg_update: single("cg_update.wgsl"),
            cg_check: single("cg_check.wgsl"),
            target_sweep: single("target_sweep.wgsl"),
            bptt: single("bptt.wgsl"),
            optimizer: single("optimizer.wgsl"),
            sum_sq: single("sum_sq.wgsl"),
            transpose: single("transpose.wgsl"),
            gru_forward: single("gru_forward.wgsl"),
            gru_bptt: single("gru_bptt.wgsl"),
            jvp: pipeline(&jacobian, "jvp"),
            vjp: pipeline(&jacobian, "vjp"),
            jacobian_sweep: pipeline(&jacobian, "jacobian_sweep"),
        }
    }
}

/// How many workgroups a dispatch launches.
pub(crate) enum Groups {
    /// A fixed grid.
    Direct([u32; 3]),
    /// A grid a kernel wrote into `buffer` at byte `offset` (CG stops itself this way).
    Indirect(wgpu::Buffer, u64),
}

/// One kernel launch with its bindings, recorded as often as needed.
pub(crate) struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: Groups,
    /// Binding 0; rewrite it with `GpuContext::write` for per-step settings.
    pub uniform: wgpu::Buffer,
}

impl Dispatch {
    /// Binds `uniform` at 0 and `buffers` at their binding numbers.
    pub fn new<U: bytemuck::Pod>(
        ctx: &GpuContext,
        pipeline: &wgpu::ComputePipeline,
        uniform: &U,
        buffers: &[(u32, wgpu::BindingResource<'_>)],
        groups: Groups,
    ) -> Result<Self> {
        let uniform = ctx.uniform("settings", uniform)?;
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        entries.extend(
            buffers
                .iter()
                .map(|(binding, resource)| wgpu::BindGroupEntry {
                    binding: *binding,
                    resource: resource.clone(),
                }),
        );
        let bind_group = ctx.checked(|| {
            ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
        })?;
        Ok(Self {
            pipeline: pipeline.clone(),
            bind_group,
            groups,
            uniform,
        })
    }

    /// Records the launch into `pass`.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        match &self.groups {
            Groups::Direct([x, y, z]) => pass.dispatch_workgroups(*x, *y, *z),
            Groups::Indirect(buffer, offset) => pass.dispatch_workgroups_indirect(buffer, *offset),
        }
    }
}
