//! One kernel launch with its bindings (`Dispatch`): what every kernel wrapper builds and
//! `iteration` records. Binding 0 of every kernel is its uniform block of sizes and
//! settings; the other bindings are derived from the shader (`layout: None`), so the
//! wrappers only say which buffer goes where.

use anyhow::Result;

use crate::gpu::context::GpuContext;

/// One kernel launch with its bindings, recorded as often as needed.
pub(crate) struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    /// Workgroups along x, y, z.
    groups: [u32; 3],
    /// Binding 0; rewrite it with `GpuContext::write` for per-step settings.
    pub uniform: wgpu::Buffer,
}

impl Dispatch {
    /// Binds `uniform` at 0 and `buffers` at their binding numbers; launches `groups`.
    pub fn new<U: bytemuck::Pod>(
        ctx: &GpuContext,
        pipeline: &wgpu::ComputePipeline,
        uniform: &U,
        buffers: &[(u32, wgpu::BindingResource<'_>)],
        groups: [u32; 3],
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
        let [x, y, z] = self.groups;
        pass.dispatch_workgroups(x, y, z);
    }
}
