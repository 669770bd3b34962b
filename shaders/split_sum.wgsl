// The second pass of a split reduction (twin of the CPU reference's single sum over all
// rows): C (+)= Σ_z S_z, where matmul.wgsl's workgroups along z each wrote the partial
// product of their rows into a slice S_z of `partial` (see its header). One invocation per
// element of C; the slices are added in order, so the result does not depend on the grid.

struct Dims {
    // Elements of C (m·n), also the stride between slices.
    len: u32,
    splits: u32,
    c_offset: u32,
    // 1: C += the sum (C already holds a sum, as matmul.wgsl's `accumulate`).
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i >= dims.len {
        return;
    }
    var sum = 0.0;
    for (var z = 0u; z < dims.splits; z++) {
        sum += partial[z * dims.len + i];
    }
    let e = dims.c_offset + i;
    c[e] = select(sum, c[e] + sum, dims.accumulate == 1u);
}
