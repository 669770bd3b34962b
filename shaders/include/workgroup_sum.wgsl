// The sum over a workgroup of one value per invocation, by a tree in workgroup memory.
// gpu::kernel appends this file to jacobian.wgsl (the CG's inner products, one sequence
// per workgroup), sum_sq.wgsl (the diagnostics' squared norms, one block per
// workgroup) and seq_head.wgsl (a softmax's normalizer, one row per workgroup). cg_check.wgsl keeps its own tree: it reduces two sums and a maximum through
// one set of barriers.
//
// The kernel declares WG, its invocations per workgroup (a power of two; const or
// override), and calls workgroup_sum in uniform control flow.

var<workgroup> partial: array<f32, WG>;

// Σ over the workgroup of each invocation's `value`, the same (uniform) in every invocation.
fn workgroup_sum(lid: u32, value: f32) -> f32 {
    // Nobody may still be reading the previous sum.
    workgroupBarrier();
    partial[lid] = value;
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if lid < stride {
            partial[lid] += partial[lid + stride];
        }
    }
    return workgroupUniformLoad(&partial[0]);
}
