// The heads at every step and their loss (twin of src/cpu/seq_head.rs), between the
// matrix products that gpu::seq_head records around it, block after block of k steps
// (block rows r = (t - 1 - t0)·B + s for steps t0 + 1 … t0 + k):
//
//     Z = H Vᵀ                                   (matmul.wgsl)
//     softmax_rows: z = Z_r + c; the row's loss log Σ exp z − z_label and hit (its first
//       arg-max is the label) into row_stats; ∂ℓ/∂z = (softmax(z) − onehot) / (B·T) over Z_r
//     g = (∂ℓ/∂Z) V, ∇V += (∂ℓ/∂Z)ᵀ H, ∇c += (∂ℓ/∂Z)ᵀ 1   (matmul.wgsl)
//
// then step_stats sums the rows: ℓ_t (the mean over the B sequences) and the hits of each
// step into per_step, and the mean loss and the accuracy over all B·T rows into stats.
// step_stats runs in bounded segments (gpu::segments picks how many steps from
// gpu::loops::step_stats): one launch takes steps first_step … first_step + step_count − 1
// and adds its part of the means to stats (the first launch starts them from 0).
// One workgroup per row: q may be large (10 000 words), so its invocations split the
// row and reduce its maximum and its sum in workgroup memory.
// Layout: Z [rows, q] (the block), c [q], labels u32 [T, B] (step-major, global row
// (t - 1)·B + s), row_stats [T·B, 2], per_step [T, 2], stats [2].

const WG: u32 = 256u;

// gpu::kernel appends include/workgroup_sum.wgsl (workgroup_sum) to this file.

// Marks an invocation that has seen no entry of the row (q < WG).
const NONE: u32 = 0xffffffffu;

struct Dims {
    batch: u32,
    steps: u32,
    outputs: u32,
    // Global row (t0·B) of the block's first row.
    first_row: u32,
    // Rows in this block.
    rows: u32,
    // Workgroups per row of softmax_rows' grid (it may be 2-D).
    groups_x: u32,
    // step_stats: this launch's steps (0-based) and how many.
    first_step: u32,
    step_count: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> c: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> z: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> per_step: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;

var<workgroup> top: array<f32, WG>;
var<workgroup> top_at: array<u32, WG>;

// Whether entry (v, at) beats (best, best_at): larger, or as large and earlier (the
// reference's first arg-max).
fn beats(v: f32, at: u32, best: f32, best_at: u32) -> bool {
    if at == NONE {
        return false;
    }
    return best_at == NONE || v > best || (v == best && at < best_at);
}

@compute @workgroup_size(WG)
fn softmax_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg.y * dims.groups_x + wg.x;
    // The same for the whole workgroup: it leaves together.
    if r >= dims.rows {
        return;
    }
    let q = dims.outputs;
    let row = r * q;
    let label = labels[dims.first_row + r];
    // Every invocation reads z_label before any writes over the row (barriers between).
    let z_label = z[row + label] + c[label];
    var best = 0.0;
    var best_at = NONE;
    for (var k = lid; k < q; k += WG) {
        let v = z[row + k] + c[k];
        if beats(v, k, best, best_at) {
            best = v;
            best_at = k;
        }
    }
    top[lid] = best;
    top_at[lid] = best_at;
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if lid < stride && beats(top[lid + stride], top_at[lid + stride], top[lid], top_at[lid]) {
            top[lid] = top[lid + stride];
            top_at[lid] = top_at[lid + stride];
        }
    }
    let m = workgroupUniformLoad(&top[0]);
    let argmax = workgroupUniformLoad(&top_at[0]);
    var part = 0.0;
    for (var k = lid; k < q; k += WG) {
        part += exp(z[row + k] + c[k] - m);
    }
    let sum = workgroup_sum(lid, part);
    // Everyone has read z_label and the row; each invocation rewrites only the entries
    // it read itself.
    storageBarrier();
    let count = f32(dims.batch * dims.steps);
    for (var k = lid; k < q; k += WG) {
        let p = exp(z[row + k] + c[k] - m) / sum;
        z[row + k] = (p - select(0.0, 1.0, k == label)) / count;
    }
    if lid == 0u {
        let global = dims.first_row + r;
        row_stats[2u * global] = m + log(sum) - z_label;
        row_stats[2u * global + 1u] = select(0.0, 1.0, argmax == label);
    }
}

@compute @workgroup_size(WG)
fn step_stats(@builtin(local_invocation_index) lid: u32) {
    let nb = dims.batch;
    let end = dims.first_step + dims.step_count;
    // This invocation's part of the sums of ℓ_t and of the hits.
    var loss_part = 0.0;
    var hits_part = 0.0;
    for (var t = dims.first_step + lid; t < end; t += WG) {
        var loss = 0.0;
        var hits = 0.0;
        for (var s = 0u; s < nb; s++) {
            loss += row_stats[2u * (t * nb + s)];
            hits += row_stats[2u * (t * nb + s) + 1u];
        }
        per_step[2u * t] = loss / f32(nb);
        per_step[2u * t + 1u] = hits;
        loss_part += loss / f32(nb);
        hits_part += hits;
    }
    let loss_sum = workgroup_sum(lid, loss_part);
    let hits_sum = workgroup_sum(lid, hits_part);
    if lid == 0u {
        let first = dims.first_step == 0u;
        stats[0] = select(stats[0], 0.0, first) + loss_sum / f32(dims.steps);
        stats[1] = select(stats[1], 0.0, first) + hits_sum / f32(nb * dims.steps);
    }
}
