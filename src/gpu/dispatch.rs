//! One kernel launch with its bindings (`Dispatch`): what every kernel wrapper builds and
//! `iteration` records. Binding 0 of every kernel is its uniform block of sizes and
//! settings; the other bindings are derived from the shader (`layout: None`), so the
//! wrappers only say which buffer goes where.

use anyhow::Result;

use crate::gpu::context::GpuContext;

/// One kernel launch with its bindings — or a sequence of launches of the same kernel on
/// the same buffers, one per segment of a long loop, each with its own uniform block
/// (`Dispatch::segments`) — recorded as often as needed.
pub(crate) struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    /// In order: a bind group (binding its own block of `uniform`) and how many launches
    /// in a row use it.
    launches: Vec<(wgpu::BindGroup, usize)>,
    /// Workgroups along x, y, z.
    groups: [u32; 3],
    /// Binding 0: the uniform blocks, one per launch; rewrite a single launch's with
    /// `GpuContext::write` for per-step settings, or all of them with `rewrite`.
    pub uniform: wgpu::Buffer,
    /// Bytes from one block of `uniform` to the next.
    stride: u64,
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
        Self::segments(
            ctx,
            pipeline,
            std::slice::from_ref(uniform),
            buffers,
            groups,
        )
    }

    /// One launch per block of `uniforms`, in order, all on the same `buffers` and grid:
    /// the segments of a loop, each told its part by its block.
    pub fn segments<U: bytemuck::Pod>(
        ctx: &GpuContext,
        pipeline: &wgpu::ComputePipeline,
        uniforms: &[U],
        buffers: &[(u32, wgpu::BindingResource<'_>)],
        groups: [u32; 3],
    ) -> Result<Self> {
        let blocks: Vec<(U, usize)> = uniforms.iter().map(|u| (*u, 1)).collect();
        Self::repeated(ctx, pipeline, &blocks, buffers, groups)
    }

    /// Each block of `blocks` launched as often as it says, in order, all on the same
    /// `buffers` and grid: segments that differ only in where they start (a loop whose
    /// launches all resume from state in buffers) share one block and one bind group. The
    /// blocks sit in one uniform buffer at offsets aligned as the device requires, written
    /// once here (push constants would avoid the bind groups, but in wgpu 30 they are the
    /// optional feature `IMMEDIATES`, not on every adapter).
    pub fn repeated<U: bytemuck::Pod>(
        ctx: &GpuContext,
        pipeline: &wgpu::ComputePipeline,
        blocks: &[(U, usize)],
        buffers: &[(u32, wgpu::BindingResource<'_>)],
        groups: [u32; 3],
    ) -> Result<Self> {
        let size = std::mem::size_of::<U>() as u64;
        let stride = size.next_multiple_of(u64::from(
            ctx.limits.min_uniform_buffer_offset_alignment.max(4),
        ));
        let mut bytes = vec![0u8; (stride * blocks.len().max(1) as u64) as usize];
        for (i, (u, _)) in blocks.iter().enumerate() {
            let at = i * stride as usize;
            bytes[at..at + size as usize].copy_from_slice(bytemuck::bytes_of(u));
        }
        let uniform = ctx.uniform("settings", &bytes)?;
        let layout = pipeline.get_bind_group_layout(0);
        let mut launches = Vec::with_capacity(blocks.len());
        for (i, &(_, count)) in blocks.iter().enumerate() {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &uniform,
                    offset: i as u64 * stride,
                    size: std::num::NonZeroU64::new(size),
                }),
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
                    layout: &layout,
                    entries: &entries,
                })
            })?;
            launches.push((bind_group, count));
        }
        Ok(Self {
            pipeline: pipeline.clone(),
            launches,
            groups,
            uniform,
            stride,
        })
    }

    /// Rewrites the uniform blocks with `blocks`, one per block in order (per-step
    /// settings of a kernel launched in segments).
    pub fn rewrite<U: bytemuck::Pod>(&self, ctx: &GpuContext, blocks: &[U]) {
        for (i, block) in blocks.iter().enumerate() {
            ctx.write(
                &self.uniform,
                i as u64 * self.stride,
                std::slice::from_ref(block),
            );
        }
    }

    /// Records the launches into `pass`, in order. Consecutive launches in one pass are
    /// ordered for the storage buffers they write: wgpu puts a barrier between them.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        let [x, y, z] = self.groups;
        for (bind_group, count) in &self.launches {
            pass.set_bind_group(0, bind_group, &[]);
            for _ in 0..*count {
                pass.dispatch_workgroups(x, y, z);
            }
        }
    }
}
