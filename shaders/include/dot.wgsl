// Dot products of a matrix's columns with a vector in workgroup memory: the hot loops of
// the fused kernels. gpu::kernel appends this file to forward.wgsl (W h_{t−1} through Wᵀ),
// bptt.wgsl (Wᵀ δ_{t+1}), target_sweep.wgsl (P s through Pᵀ), sweep_bptt.wgsl (both
// products, through [Pᵀ; W]), gru_forward.wgsl (the three gates' W h_{t−1} through Wᵀ),
// gru_bptt.wgsl (Wᵀ dgh), jacobian.wgsl (J_t u: W u through Wᵀ, for either cell),
// gru_per_gate_sweep.wgsl (P_g s through the stacked P_gᵀ), gru_sweep_bptt.wgsl (the
// products of both, through [P_rᵀ; P_zᵀ; P_nᵀ; W]),
// dtp_reverse.wgsl (W h~ and V y through Wᵀ and Vᵀ) and dtp_targets.wgsl (V h_t and V dv_t
// through Vᵀ): one copy of the loop they all run.
//
// Column c of a row-major matrix, so that neighbouring invocations (c, c + 1, ...) read
// neighbouring addresses. Eight terms per loop iteration: besides the fewer branches, this
// divides the loop count per invocation by eight. That count matters on llvmpipe (Mesa's
// software Vulkan driver, at least up to 22.3), which allows one invocation 65535 loop
// iterations in total before it silently cuts loops short: the host's loop-count model
// (gpu::loops) counts these loops, and the time loops run in launches of as many steps as
// stay under that bound there (gpu::segments).
//
// A sum over d terms comes in two parts: `*_dot8` takes the first d − d % 8 terms, eight
// per iteration into four partial sums (terms j ≡ 0, 1, 2, 3 mod 4), and `*_rest` adds the
// last d % 8 terms one at a time to a given sum. `column_dot` and `gate_columns_dot` put
// them together in the usual order; a kernel that adds in another order (forward.wgsl,
// bptt.wgsl) or starts from its biases (gru_forward.wgsl) calls the parts (`columns_dot8`
// is the eight-term part of several vectors at once), so that every
// kernel's result is the same, bit for bit, as when each had its own copy of the loop.
//
// WGSL functions take no pointers to storage or workgroup memory (naga refuses them
// without the unrestricted_pointer_parameters extension), so the kernel names the operands
// with two functions of its own, which the drivers inline:
//
//     fn dot_matrix(e: u32) -> f32   element e of its matrix (storage)
//     fn dot_vector(j: u32) -> f32   element j of its vector (workgroup memory)
//
// One matrix per kernel: wgpu derives each entry point's bindings from the variables it
// can reach, so an accessor that chose between two buffers would make every entry point
// that takes a dot product bind both (jacobian.wgsl's jvp binds Wᵀ only, vjp W only; its
// loop over W, for Wᵀ w, stays there).

// (x + y) + (z + w): how every kernel folds the four partial sums.
fn hsum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// The four partial sums of Σ_j M[c + j·d] v[v0 + j] over j < d − d % 8 (M = dot_matrix,
// v = dot_vector): column c of M [n, d] (c < d) over d rows from row 0, or over the block
// of rows from r when c = r·d + i.
fn column_dot8(c: u32, d: u32, v0: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j + 8u <= d; j += 8u) {
        let e = c + j * d;
        let k = v0 + j;
        acc += vec4<f32>(dot_matrix(e), dot_matrix(e + d), dot_matrix(e + 2u * d), dot_matrix(e + 3u * d))
            * vec4<f32>(dot_vector(k), dot_vector(k + 1u), dot_vector(k + 2u), dot_vector(k + 3u));
        acc += vec4<f32>(dot_matrix(e + 4u * d), dot_matrix(e + 5u * d), dot_matrix(e + 6u * d), dot_matrix(e + 7u * d))
            * vec4<f32>(dot_vector(k + 4u), dot_vector(k + 5u), dot_vector(k + 6u), dot_vector(k + 7u));
    }
    return acc;
}

// The eight-term blocks of a sum over d terms that lane `lane` of `lanes` takes (the lanes
// per unit of forward.wgsl, bptt.wgsl and target_sweep.wgsl): the terms [x, y), contiguous,
// x and y multiples of 8, ⌈(d/8)/lanes⌉ blocks a lane in lane order (the last lanes fewer,
// possibly none). The lanes together cover the eight-term part [0, d − d % 8) once; at
// lanes = 1 that part is the one lane's, so its sums are column_dot8's, bit for bit.
fn lane_chunk(d: u32, lane: u32, lanes: u32) -> vec2<u32> {
    let blocks = d >> 3u;
    let per = (blocks + lanes - 1u) / lanes;
    return vec2<u32>(min(lane * per, blocks), min(lane * per + per, blocks)) * 8u;
}

// column_dot8 for `n` vectors at once (n ≤ MAX_SEQS), the k-th at v0 + k·stride, over the
// terms chunk.x ≤ j < chunk.y (multiples of 8; lane_chunk's): with the chunk [0, d − d % 8)
// element k is column_dot8(c, d, v0 + k·stride), bit for bit (the same terms added in the
// same order), and elements n and beyond are 0. Each element of M loaded serves all n
// vectors: the sequences per workgroup of forward.wgsl, bptt.wgsl and target_sweep.wgsl,
// where n is an override constant, so the drivers unroll the inner loop and keep the sums
// in registers.
fn columns_dot8(c: u32, d: u32, v0: u32, stride: u32, n: u32, chunk: vec2<u32>) -> array<vec4<f32>, MAX_SEQS> {
    var acc: array<vec4<f32>, MAX_SEQS>;
    for (var j = chunk.x; j < chunk.y; j += 8u) {
        let e = c + j * d;
        let m0 = vec4<f32>(dot_matrix(e), dot_matrix(e + d), dot_matrix(e + 2u * d), dot_matrix(e + 3u * d));
        let m1 = vec4<f32>(dot_matrix(e + 4u * d), dot_matrix(e + 5u * d), dot_matrix(e + 6u * d), dot_matrix(e + 7u * d));
        for (var k = 0u; k < n; k++) {
            let v = v0 + k * stride + j;
            acc[k] += m0 * vec4<f32>(dot_vector(v), dot_vector(v + 1u), dot_vector(v + 2u), dot_vector(v + 3u));
            acc[k] += m1 * vec4<f32>(dot_vector(v + 4u), dot_vector(v + 5u), dot_vector(v + 6u), dot_vector(v + 7u));
        }
    }
    return acc;
}

// Eight-term blocks of a column that one invocation keeps in registers at most: 64 values,
// 16 vec4s, beside the sums and the rest of a time loop's step. The time loops of the tanh
// RNN (forward.wgsl, bptt.wgsl, sweep_bptt.wgsl) load their invocation's chunk of its
// column once per launch, where it fits (`column_fits_registers`), instead of reading it
// from the cache at every step: on a GPU each step is a chain of latencies, and a load
// from the L1 is one of the longest links (docs/PERFORMANCE.md, "W in registers").
const REG_BLOCKS: u32 = 8u;

// Whether each invocation of a time loop with `lanes` lanes per unit and `wg` invocations
// owns at most one unit and its lane's chunk (lane_chunk's) is at most REG_BLOCKS blocks.
fn column_fits_registers(d: u32, lanes: u32, wg: u32) -> bool {
    return d * lanes <= wg && ((d >> 3u) + lanes - 1u) / lanes <= REG_BLOCKS;
}

// The terms chunk.x ≤ j < chunk.y of column c of M (dot_matrix; see column_dot8), two
// vec4s a block, for columns_dot8_registers. The loops run to a constant bound and leave
// early, so that a driver can unroll them and index the array with constants, which is
// what keeps it in registers.
fn column_registers(c: u32, d: u32, chunk: vec2<u32>) -> array<vec4<f32>, 2u * REG_BLOCKS> {
    var m: array<vec4<f32>, 2u * REG_BLOCKS>;
    for (var b = 0u; b < REG_BLOCKS; b++) {
        let j = chunk.x + 8u * b;
        if j >= chunk.y {
            break;
        }
        let e = c + j * d;
        m[2u * b] = vec4<f32>(dot_matrix(e), dot_matrix(e + d), dot_matrix(e + 2u * d), dot_matrix(e + 3u * d));
        m[2u * b + 1u] = vec4<f32>(dot_matrix(e + 4u * d), dot_matrix(e + 5u * d), dot_matrix(e + 6u * d), dot_matrix(e + 7u * d));
    }
    return m;
}

// columns_dot8 with the column's chunk from registers (`m`, column_registers' of the same
// column and chunk): the same terms added in the same order, so the same sums, bit for bit.
fn columns_dot8_registers(m: array<vec4<f32>, 2u * REG_BLOCKS>, v0: u32, stride: u32, n: u32, chunk: vec2<u32>) -> array<vec4<f32>, MAX_SEQS> {
    var acc: array<vec4<f32>, MAX_SEQS>;
    for (var b = 0u; b < REG_BLOCKS; b++) {
        let j = chunk.x + 8u * b;
        if j >= chunk.y {
            break;
        }
        for (var k = 0u; k < n; k++) {
            let v = v0 + k * stride + j;
            acc[k] += m[2u * b] * vec4<f32>(dot_vector(v), dot_vector(v + 1u), dot_vector(v + 2u), dot_vector(v + 3u));
            acc[k] += m[2u * b + 1u] * vec4<f32>(dot_vector(v + 4u), dot_vector(v + 5u), dot_vector(v + 6u), dot_vector(v + 7u));
        }
    }
    return acc;
}

// The last d % 8 terms of column c of M (those column_rest adds), in registers for
// column_rest_registers: forward.wgsl's finisher of a unit keeps them beside its lane's
// chunk. (In bptt.wgsl and sweep_bptt.wgsl, the finish functions, they made the loops
// slower on an H200: docs/PERFORMANCE.md, "W in registers".)
fn rest_registers(c: u32, d: u32) -> array<f32, 8> {
    var m: array<f32, 8>;
    let base = d & ~7u;
    for (var j = 0u; j < 8u; j++) {
        if base + j >= d {
            break;
        }
        m[j] = dot_matrix(c + (base + j) * d);
    }
    return m;
}

// column_rest with the terms from registers (`m`, rest_registers' of the same column): the
// same terms added in the same order.
fn column_rest_registers(sum: f32, m: array<f32, 8>, d: u32, v0: u32) -> f32 {
    var s = sum;
    let base = d & ~7u;
    for (var j = 0u; j < 8u; j++) {
        if base + j >= d {
            break;
        }
        s += m[j] * dot_vector(v0 + base + j);
    }
    return s;
}

// column_rest of column c onto `sum`, its terms from `m` (rest_registers' of column c) when
// `kept`, else from memory.
fn column_rest_kept(sum: f32, kept: bool, m: array<f32, 8>, c: u32, d: u32, v0: u32) -> f32 {
    if kept {
        return column_rest_registers(sum, m, d, v0);
    }
    return column_rest(sum, c, d, v0);
}

// sum + M[c + j·d] v[v0 + j] for j = d − d % 8, ..., d − 1, in that order: the terms
// column_dot8 leaves.
fn column_rest(sum: f32, c: u32, d: u32, v0: u32) -> f32 {
    var s = sum;
    for (var j = d & ~7u; j < d; j++) {
        s += dot_matrix(c + j * d) * dot_vector(v0 + j);
    }
    return s;
}

// Σ_{j < d} M[c + j·d] v[j]: the eight-term part first, then the rest.
fn column_dot(c: u32, d: u32) -> f32 {
    return column_rest(hsum(column_dot8(c, d, 0u)), c, d, 0u);
}

// The GRU's three gates at once: Σ_j M[j·3d + i + g·d] v[j] for the gates g = r, z, n
// (columns i, d + i, 2d + i of Wᵀ [d, 3d], i.e. rows i, d + i, 2d + i of W [3d, d]), over
// the eight-term blocks chunk.x ≤ j < chunk.y (lane_chunk's: all of j < d − d % 8 for one
// lane), each folded by hsum. One pass over v serves all three.
fn gate_columns_dot8(i: u32, d: u32, chunk: vec2<u32>) -> vec3<f32> {
    let g = 3u * d;
    var ar = vec4<f32>(0.0);
    var az = vec4<f32>(0.0);
    var an = vec4<f32>(0.0);
    for (var j = chunk.x; j < chunk.y; j += 8u) {
        let v0 = vec4<f32>(dot_vector(j), dot_vector(j + 1u), dot_vector(j + 2u), dot_vector(j + 3u));
        let v1 = vec4<f32>(dot_vector(j + 4u), dot_vector(j + 5u), dot_vector(j + 6u), dot_vector(j + 7u));
        let c0 = j * g + i;
        ar += vec4<f32>(dot_matrix(c0), dot_matrix(c0 + g), dot_matrix(c0 + 2u * g), dot_matrix(c0 + 3u * g)) * v0
            + vec4<f32>(dot_matrix(c0 + 4u * g), dot_matrix(c0 + 5u * g), dot_matrix(c0 + 6u * g), dot_matrix(c0 + 7u * g)) * v1;
        let c1 = c0 + d;
        az += vec4<f32>(dot_matrix(c1), dot_matrix(c1 + g), dot_matrix(c1 + 2u * g), dot_matrix(c1 + 3u * g)) * v0
            + vec4<f32>(dot_matrix(c1 + 4u * g), dot_matrix(c1 + 5u * g), dot_matrix(c1 + 6u * g), dot_matrix(c1 + 7u * g)) * v1;
        let c2 = c1 + d;
        an += vec4<f32>(dot_matrix(c2), dot_matrix(c2 + g), dot_matrix(c2 + 2u * g), dot_matrix(c2 + 3u * g)) * v0
            + vec4<f32>(dot_matrix(c2 + 4u * g), dot_matrix(c2 + 5u * g), dot_matrix(c2 + 6u * g), dot_matrix(c2 + 7u * g)) * v1;
    }
    return vec3<f32>(hsum(ar), hsum(az), hsum(an));
}

// sum + the terms gate_columns_dot8 leaves (j = d − d % 8, ..., d − 1, in that order).
fn gate_columns_rest(sum: vec3<f32>, i: u32, d: u32) -> vec3<f32> {
    var s = sum;
    for (var j = d & ~7u; j < d; j++) {
        let c = j * 3u * d + i;
        s += vec3<f32>(dot_matrix(c), dot_matrix(c + d), dot_matrix(c + 2u * d)) * dot_vector(j);
    }
    return s;
}

// The three gates' full sums: the eight-term part first, then the rest.
fn gate_columns_dot(i: u32, d: u32) -> vec3<f32> {
    return gate_columns_rest(gate_columns_dot8(i, d, lane_chunk(d, 0u, 1u)), i, d);
}
