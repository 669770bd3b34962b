//! Reading results back in one go: every region a log point or an evaluation asks for is
//! copied in one encoder into one staging buffer, which is mapped once and kept for the
//! next read (grown when a read needs more).

use anyhow::{anyhow, Context, Result};

use crate::gpu::context::GpuContext;

/// A span of a device buffer to read, in 4-byte words.
#[derive(Clone, Copy)]
pub(crate) struct Region<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub start: usize,
    pub words: usize,
}

impl<'a> Region<'a> {
    /// `words` words of `buffer` from word `start` on.
    pub fn new(buffer: &'a wgpu::Buffer, start: usize, words: usize) -> Self {
        Self {
            buffer,
            start,
            words,
        }
    }
}

/// A region copied to `to` at word `at`.
pub(crate) struct CopyTo<'a> {
    pub from: Region<'a>,
    pub to: &'a wgpu::Buffer,
    pub at: usize,
}

/// Runs `record` in one compute pass, then the copies, in one submission (no wait).
pub(crate) fn record_then_copy(
    ctx: &GpuContext,
    record: impl FnOnce(&mut wgpu::ComputePass<'_>),
    copies: &[CopyTo<'_>],
) -> Result<()> {
    ctx.checked(|| {
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("launches and copies"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("launches"),
                timestamp_writes: None,
            });
            record(&mut pass);
        }
        for c in copies.iter().filter(|c| c.from.words > 0) {
            encoder.copy_buffer_to_buffer(
                c.from.buffer,
                4 * c.from.start as u64,
                c.to,
                4 * c.at as u64,
                4 * c.from.words as u64,
            );
        }
        ctx.queue.submit([encoder.finish()]);
    })
}

/// The staging buffer, reused from read to read.
#[derive(Default)]
pub(crate) struct Readback {
    staging: Option<wgpu::Buffer>,
}

impl Readback {
    /// Runs `record` (the launches whose results are read, if any) and copies every region
    /// after it, all in one submission; waits once and returns each region's words.
    pub fn read(
        &mut self,
        ctx: &GpuContext,
        record: impl FnOnce(&mut wgpu::ComputePass<'_>),
        regions: &[Region<'_>],
    ) -> Result<Vec<Vec<u32>>> {
        let total: usize = regions.iter().map(|r| r.words).sum();
        let bytes = 4 * total.max(1) as u64;
        if self.staging.as_ref().is_none_or(|s| s.size() < bytes) {
            self.staging = None; // free the smaller one first
            self.staging = Some(ctx.checked(|| {
                ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback staging"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })?);
        }
        let staging = self.staging.as_ref().expect("just made");
        let mut at = 0;
        let copies: Vec<CopyTo<'_>> = regions
            .iter()
            .map(|&from| {
                let copy = CopyTo {
                    from,
                    to: staging,
                    at,
                };
                at += from.words;
                copy
            })
            .collect();
        record_then_copy(ctx, record, &copies)?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
            // The receiver outlives the poll below; a send cannot fail.
            let _ = tx.send(r);
        });
        ctx.device
            .poll(wgpu::PollType::wait_indefinitely())
            .context("waiting for the GPU")?;
        rx.recv()
            .context("readback callback never ran")?
            .context("mapping the readback buffer")?;
        let words: Vec<u32> = {
            let view = staging
                .get_mapped_range(..bytes)
                .map_err(|e| anyhow!("reading back: {e:?}"))?;
            bytemuck::pod_collect_to_vec(&view)
        };
        staging.unmap();
        let mut at = 0;
        Ok(regions
            .iter()
            .map(|r| {
                let part = words[at..at + r.words].to_vec();
                at += r.words;
                part
            })
            .collect())
    }
}
