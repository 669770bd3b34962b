// Tiled matrix product C = op(A) B, op(A) = A or Aᵀ (twin of nalgebra's products in the
// CPU reference). Used for the reductions over all T·B rows (∇W = Σ δ_tᵀ h_{t-1} as
// Δᵀ H, ∇U = Δᵀ X, ∇b = Δᵀ 1) and for CG's products W X and Wᵀ Y.
//
// Row-major: C [m, n], B [k, n], A [m, k] or, transposed, [k, m]. Each workgroup computes
// a TILE×TILE block of C, staging TILE×TILE blocks of both operands in workgroup memory.

const TILE: u32 = 16u;

struct Dims {
    m: u32,
    n: u32,
    k: u32,
    // 1: A is stored [k, m] and used transposed.
    trans_a: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

var<workgroup> tile_a: array<array<f32, TILE>, TILE>;
var<workgroup> tile_b: array<array<f32, TILE>, TILE>;

fn load_a(row: u32, kk: u32) -> f32 {
    if row >= dims.m || kk >= dims.k {
        return 0.0;
    }
    if dims.trans_a == 1u {
        return a[kk * dims.m + row];
    }
    return a[row * dims.k + kk];
}

fn load_b(kk: u32, col: u32) -> f32 {
    if kk >= dims.k || col >= dims.n {
        return 0.0;
    }
    return b[kk * dims.n + col];
}

@compute @workgroup_size(TILE, TILE)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.y * TILE + lid.y;
    let col = wg.x * TILE + lid.x;
    var acc = 0.0;
    let tiles = (dims.k + TILE - 1u) / TILE;
    for (var t = 0u; t < tiles; t++) {
        let base = t * TILE;
        // Block rows of op(A) are indexed by this workgroup's rows; for the transposed
        // case lid.x walks m so that neighbouring invocations read neighbouring addresses.
        if dims.trans_a == 1u {
            tile_a[lid.x][lid.y] = load_a(wg.y * TILE + lid.x, base + lid.y);
        } else {
            tile_a[lid.y][lid.x] = load_a(row, base + lid.x);
        }
        tile_b[lid.y][lid.x] = load_b(base + lid.y, col);
        workgroupBarrier();
        for (var s = 0u; s < TILE; s++) {
            acc += tile_a[lid.y][s] * tile_b[s][lid.x];
        }
        workgroupBarrier();
    }
    if row < dims.m && col < dims.n {
        c[row * dims.n + col] = acc;
    }
}
