//! The device buffers of a trained embedding table's batch (docs/ALGORITHM.md §13): the
//! token ids, their CSR index by token (what lets embedding_grad.wgsl sum without float
//! atomics) and the per-token sums of δ; and the check that a table fits the device.

use anyhow::Result;
use nalgebra::DMatrix;

use crate::error::Error;
use crate::gpu::context::GpuContext;
use crate::gpu::layout::Shape;
use crate::model::Dims;

/// What a trained embedding table needs per batch shape (docs/ALGORITHM.md §13): the
/// token ids [T, B] (step-major, as x's rows), for each of the V tokens the rows of δ that
/// hold it as a CSR index (`offsets` [V + 1] into `positions` [T·B]), and the per-token
/// sums of δ, S [V, d], that embedding_grad.wgsl writes.
pub(crate) struct EmbeddingBuffers {
    pub tokens: wgpu::Buffer,
    pub offsets: wgpu::Buffer,
    pub positions: wgpu::Buffer,
    pub sums: wgpu::Buffer,
    /// V, the table's rows.
    pub vocabulary: usize,
}

impl EmbeddingBuffers {
    pub(crate) fn new(ctx: &GpuContext, vocabulary: usize, d: usize, shape: Shape) -> Result<Self> {
        let rows = shape.steps * shape.batch;
        let none = wgpu::BufferUsages::empty();
        let f = |n: usize| 4 * n as u64;
        Ok(Self {
            tokens: ctx.storage(&format!("token ids [T·B = {rows}]"), f(rows), none)?,
            offsets: ctx.storage(
                &format!("token index offsets [V + 1 = {}]", vocabulary + 1),
                f(vocabulary + 1),
                none,
            )?,
            positions: ctx.storage(&format!("token index rows [T·B = {rows}]"), f(rows), none)?,
            sums: ctx.storage(
                &format!("per-token sums of δ [V = {vocabulary}, d = {d}]"),
                f(vocabulary * d),
                none,
            )?,
            vocabulary,
        })
    }

    /// Uploads the token ids of `tokens` (B×T, every id below V) and their CSR index.
    pub(crate) fn write(&self, ctx: &GpuContext, tokens: &DMatrix<u32>) {
        let (b, t_len) = tokens.shape();
        // Row r = t·B + s of x and δ holds the token of sequence s at step t + 1.
        let ids: Vec<u32> = (0..t_len)
            .flat_map(|t| (0..b).map(move |s| tokens[(s, t)]))
            .collect();
        let (offsets, positions) = token_index(&ids, self.vocabulary);
        ctx.write(&self.tokens, 0, &ids);
        ctx.write(&self.offsets, 0, &offsets);
        ctx.write(&self.positions, 0, &positions);
    }
}

/// For each token v < `vocabulary`, the rows of `ids` holding it, ascending: a CSR index,
/// `positions[offsets[v] .. offsets[v + 1]]` (a counting sort).
pub(crate) fn token_index(ids: &[u32], vocabulary: usize) -> (Vec<u32>, Vec<u32>) {
    let mut offsets = vec![0u32; vocabulary + 1];
    for &id in ids {
        offsets[id as usize + 1] += 1;
    }
    for v in 0..vocabulary {
        offsets[v + 1] += offsets[v];
    }
    let mut next = offsets.clone();
    let mut positions = vec![0u32; ids.len()];
    for (r, &id) in ids.iter().enumerate() {
        let slot = &mut next[id as usize];
        positions[*slot as usize] = r as u32;
        *slot += 1;
    }
    (offsets, positions)
}

/// Checks, before anything is allocated, that a trained embedding table of `vocabulary`
/// rows for sizes `dims` fits the kernels and the device: its tensors and the per-token
/// sums S [V, d] indexed in 32 bits and within the largest buffer, and ∇E = S U's grid of
/// ⌈V / 64⌉ workgroup rows within one grid dimension.
pub(crate) fn check_embedding_sizes(ctx: &GpuContext, vocabulary: usize, dims: Dims) -> Result<()> {
    let l = &ctx.limits;
    let largest = l.max_buffer_size.min(l.max_storage_buffer_binding_size);
    let widest = dims.input.max(dims.hidden);
    let elements = vocabulary
        .checked_add(1)
        .and_then(|v| v.checked_mul(widest));
    let fits = elements.is_some_and(|n| u32::try_from(n).is_ok() && 4 * n as u64 <= largest);
    let groups = vocabulary.div_ceil(64) as u64;
    let max_groups = u64::from(l.max_compute_workgroups_per_dimension);
    if vocabulary == 0 || !fits || groups > max_groups {
        return Err(Error::DeviceLimit {
            limit: "embedding table".into(),
            needed: Some(vocabulary as u64),
            allowed: (largest / 4 / widest.max(1) as u64)
                .min(u64::from(u32::MAX) / widest.max(1) as u64)
                .min(max_groups * 64)
                .saturating_sub(1),
            message: format!(
                "a trained embedding table of V = {vocabulary} rows (p = {}, d = {}) does not \
                 fit this device: the table and the per-token sums [V, d] must be indexed in \
                 32 bits and fit its largest buffer ({largest} bytes), and V / 64 workgroups \
                 one grid dimension ({max_groups}); use a smaller vocabulary or the CPU backend",
                dims.input, dims.hidden
            ),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::token_index;

    #[test]
    fn the_index_lists_each_tokens_rows_in_order_and_skips_absent_ones() {
        let (offsets, positions) = token_index(&[2, 0, 2, 3, 0, 2], 5);
        assert_eq!(offsets, vec![0, 2, 2, 5, 6, 6]);
        assert_eq!(positions, vec![1, 4, 0, 2, 5, 3]);
        assert_eq!(token_index(&[], 2), (vec![0, 0, 0], vec![]));
    }
}
