// Squared Frobenius norms of consecutive blocks of a buffer: out[r] = Σ_k src[start + r·len + k]²
// for r < rows. What the per-step diagnostics reduce: the target offsets dv = v − h (TP,
// ‖v_t − h_t‖ over the batch) or the backward errors e (‖e_t‖), one block of B·d values
// per step. Run only when the host asks for them, so training steps never pay for it.
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
    var acc = 0.0;
    for (var k = lid; k < dims.len; k += WG) {
        let v = load(base + k);
        acc += v * v;
    }
    let total = workgroup_sum(lid, acc);
    if lid == 0u {
        out[r] = total;
    }
}
