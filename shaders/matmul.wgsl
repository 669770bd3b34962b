// Register-blocked matrix product C = op(A) B, op(A) = A or Aᵀ (twin of nalgebra's
// products in the CPU reference): the reductions over all T·B rows behind
// ∇W = Σ δ_tᵀ h_{t-1} as Δᵀ H, ∇U = Δᵀ X and ∇b = Δᵀ 1, and CG's products W X, Wᵀ Y.
//
// Row-major: C [m, n], B [k, n], A [m, k] or, transposed, [k, m]. Each workgroup of
// 16×16 invocations computes a TS×TS = 64×64 block of C, each invocation a 4×4 sub-block
// (rows ty + 16i, columns tx + 16j: the stores of neighbouring invocations stay adjacent).
// The k axis is walked in stages of BK: both operands' stage blocks go through workgroup
// memory, loaded so that neighbouring invocations read neighbouring addresses; each
// value loaded from workgroup memory then feeds four multiply-adds from registers
// instead of one, and a barrier pair is paid per 16·16 multiply-adds per invocation.

// Bounded segments: one launch walks the rows k_first .. k_first + k_count of the k axis
// (gpu::segments picks how many, so that no launch runs too long); the first writes C, the
// others add their partial products to it.
//
// Split reductions: when C has few 64×64 blocks against a long k axis (∇W = Δᵀ H at
// d = 100 is 4 blocks over T·B = 12 544 rows), the workgroups along z each walk k_split
// of the launch's rows and write their partial product into their own slice of C, at
// c_offset + z · c_split_stride; split_sum.wgsl then adds the slices. Without a split the
// grid has one z and k_split covers the launch.
//
// B is read as a history (only ∇W = Δᵀ H reads one in f16): HIST_F16 and hist_* come
// from include/history.wgsl, which gpu::kernel appends to this file.

const TS: u32 = 64u;
const BK: u32 = 16u;
// Invocations per workgroup (16×16).
const WG: u32 = 256u;

struct Dims {
    m: u32,
    n: u32,
    k: u32,
    // 1: A is stored [k, m] and used transposed.
    trans_a: u32,
    // This launch's rows of the k axis (k_first a multiple of BK).
    k_first: u32,
    k_count: u32,
    // Where A, B and C start in their buffers, in elements (the heads at every step take
    // a block of steps' rows of h and g; 0 elsewhere). B's is even where B is an f16
    // history (whole rows of even length).
    a_offset: u32,
    b_offset: u32,
    c_offset: u32,
    // 1: C += op(A) B: C already holds a sum (a later launch over the k rows, or the
    // heads' ∇V and ∇c summed block after block).
    accumulate: u32,
    // Rows of this launch each workgroup along z walks (a multiple of BK), and the
    // distance between the slices of C they write.
    k_split: u32,
    c_split_stride: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<HistWord>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// Stage blocks, k-major: tile_a[kk * TS + row], tile_b[kk * TS + col].
var<workgroup> tile_a: array<f32, BK * TS>;
var<workgroup> tile_b: array<f32, BK * TS>;

// The end of this launch's rows.
fn k_end() -> u32 {
    return dims.k_first + dims.k_count;
}

fn load_a(row: u32, kk: u32, end: u32) -> f32 {
    if row >= dims.m || kk >= end {
        return 0.0;
    }
    if dims.trans_a == 1u {
        return a[dims.a_offset + kk * dims.m + row];
    }
    return a[dims.a_offset + row * dims.k + kk];
}

fn load_b(kk: u32, col: u32, end: u32) -> f32 {
    if kk >= end || col >= dims.n {
        return 0.0;
    }
    let e = dims.b_offset + kk * hist_stride(dims.n) + col;
    return hist_value(b[hist_word(e)], e);
}

fn store(row: u32, col0: u32, tx: u32, slice: u32, acc: vec4<f32>) {
    if row >= dims.m {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let col = col0 + tx + 16u * j;
        if col < dims.n {
            let e = dims.c_offset + slice * dims.c_split_stride + row * dims.n + col;
            c[e] = select(acc[j], c[e] + acc[j], dims.accumulate == 1u);
        }
    }
}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * TS;
    let col0 = wg.x * TS;
    let tx = lid.x;
    let ty = lid.y;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // This workgroup's rows: its split of the launch's (all of them without a split).
    let first = dims.k_first + wg.z * dims.k_split;
    let end = min(k_end(), first + dims.k_split);
    for (var base = first; base < end; base += BK) {
        for (var s = 0u; s < BK * TS / WG; s++) {
            let e = li + s * WG;
            // Aᵀ is contiguous along m, A along k: walk whichever is contiguous fastest.
            if dims.trans_a == 1u {
                tile_a[e] = load_a(row0 + e % TS, base + e / TS, end);
            } else {
                tile_a[(e % BK) * TS + e / BK] = load_a(row0 + e / BK, base + e % BK, end);
            }
            tile_b[e] = load_b(base + e / TS, col0 + e % TS, end);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let o = kk * TS;
            let av = vec4<f32>(tile_a[o + ty], tile_a[o + ty + 16u], tile_a[o + ty + 32u], tile_a[o + ty + 48u]);
            let bv = vec4<f32>(tile_b[o + tx], tile_b[o + tx + 16u], tile_b[o + tx + 32u], tile_b[o + tx + 48u]);
            acc0 += av.x * bv;
            acc1 += av.y * bv;
            acc2 += av.z * bv;
            acc3 += av.w * bv;
        }
        workgroupBarrier();
    }
    store(row0 + ty, col0, tx, wg.z, acc0);
    store(row0 + ty + 16u, col0, tx, wg.z, acc1);
    store(row0 + ty + 32u, col0, tx, wg.z, acc2);
    store(row0 + ty + 48u, col0, tx, wg.z, acc3);
}
