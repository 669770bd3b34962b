// The second pass of a split reduction (twin of the CPU reference's single sum over all
// rows): C (+)= Σ_z S_z, where matmul.wgsl's workgroups along z each wrote the partial
// product of their rows into a slice S_z of `partial` (see its header).
//
// Each element's sum is split over dims.lanes = L invocations (a power of two, at most
// 256, gpu::matmul picks it from the number of slices): lane l adds the slices z ≡ l
// mod L in order, then the lanes' sums are added pairwise in a fixed tree. Why: a single
// invocation adding all the slices in turn waits for one load after another, a chain of
// `splits` memory round trips (up to 1 024 on a GPU, where ∇b has a single element and
// ∇W at d = 8 only 64); on an H200 that chain was most of the reductions' time (0.68 ms
// of an iteration at T = 784, d = 8, B = 256; docs/PERFORMANCE.md, "Split sums in
// parallel"). The order depends only on the number of slices and L, so the result does
// not depend on the grid; with L = 1 the slices are added in order, as one sum.
//
// A workgroup takes 256 / L consecutive elements, its invocation `lid` lane lid / (256 / L)
// of element lid mod (256 / L): for each slice, neighbouring invocations read neighbouring
// addresses.

struct Dims {
    // Elements of C (m·n), also the stride between slices.
    len: u32,
    splits: u32,
    c_offset: u32,
    // 1: C += the sum (C already holds a sum, as matmul.wgsl's `accumulate`).
    accumulate: u32,
    // Invocations per element: 1, 2, 4, …, 256.
    lanes: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;

// The lanes' sums, element e's lane l at l · (256 / L) + e.
var<workgroup> sums: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let width = 256u / dims.lanes;
    let lane = lid / width;
    let i = wg.x * width + lid % width;
    var sum = 0.0;
    if i < dims.len {
        for (var z = lane; z < dims.splits; z += dims.lanes) {
            sum += partial[z * dims.len + i];
        }
    }
    sums[lid] = sum;
    workgroupBarrier();
    // Lane l adds lane l + s's sum, s = L/2, L/4, …, 1.
    for (var s = dims.lanes / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            sums[lid] += sums[lid + s * width];
        }
        workgroupBarrier();
    }
    if lane == 0u && i < dims.len {
        let e = dims.c_offset + i;
        c[e] = select(sums[lid], c[e] + sums[lid], dims.accumulate == 1u);
    }
}
