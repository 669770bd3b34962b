// Squared Frobenius norms of consecutive blocks of a buffer: out[r] = Σ_k src[start + r·len + k]²
// for r < rows, over the elements before `end` only (the last block may be cut short).
// What the per-step diagnostics reduce: the target offsets dv = v − h (TP, ‖v_t − h_t‖
// over the batch) or the backward errors e (‖e_t‖), one block of B·d values per step; run
// only when the host asks for them, so training steps never pay for it. With `root` set,
// out[r] is the norm instead of its square: two such passes, over blocks of the gradient
// and then over the blocks' norms, give the gradient's norm that `--clip-norm` scales by
// (gpu::norms::RangeNorm).
//
// One workgroup per block (a 2-D grid past the per-dimension limit): a strided pass into registers, then a tree in workgroup memory
// (include/workgroup_sum.wgsl, which gpu::kernel appends to this file).
// The f16 variant reads a history whose rows are padded to even length; the pads hold
// zeros, so blocks of whole padded rows give the same sums.

const WG: u32 = 256u;

// src is read as a history: HIST_F16 and hist_* come from include/history.wgsl, which
// gpu::kernel appends to this file.

struct Dims {
    rows: u32,
    len: u32,
    start: u32,
    // Workgroups per row of the grid (2-D for more blocks than one dimension holds).
    groups_x: u32,
    // One past the last element summed.
    end: u32,
    // 1: write the square root of each sum.
    root: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> src: array<HistWord>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn load(i: u32) -> f32 {
    return hist_value(src[hist_word(i)], i);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg.y * dims.groups_x + wg.x;
    // The same for the whole workgroup: it leaves together.
    if r >= dims.rows {
        return;
    }
    let base = dims.start + r * dims.len;
    let stop = min(base + dims.len, dims.end);
    var acc = 0.0;
    for (var i = base + lid; i < stop; i += WG) {
        let v = load(i);
        acc += v * v;
    }
    let total = workgroup_sum(lid, acc);
    if lid == 0u {
        out[r] = select(total, sqrt(total), dims.root == 1u);
    }
}
