// The linear head z = V h_T + c and its loss (twin of src/cpu/head.rs).
//
// head_rows: one workgroup per sequence b computes z_b, the loss and hits of b,
//   dℓ/dz_b and g_T[b] = dℓ/dz_b V.
// head_params: one invocation per entry of ∇V = dzᵀ h_T and ∇c = Σ_b dz_b, plus one that
//   sums the per-sequence losses and hits into `stats` = [loss, accuracy].
// Means as in the reference: cross-entropy averages over B sequences, squared error over
// all B·q entries. Layout: V [q, d], h_T at element `last` of the history (rows of d'
// = hist_stride(d) elements), labels u32 [B] or values f32 [B, q] (stored as their
// bits), scratch = z [B, q] | dz [B, q] | (loss, hits) [B, 2].

const WG: u32 = 64u;

// The history storage (HIST_F16, hist_*): include/history.wgsl, which gpu::kernel
// appends to this file.
const CROSS_ENTROPY: u32 = 0u;
// |z - y| below this counts as a hit for regression (cpu::head::REGRESSION_HIT).
const REGRESSION_HIT: f32 = 0.04;

struct Dims {
    batch: u32,
    hidden: u32,
    outputs: u32,
    loss: u32,
    // Element offset of h_T (T·B·d').
    last: u32,
    // Invocations per row of the head_params grid (it may be 2-D).
    row_stride: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read> c: array<f32>;
@group(0) @binding(3) var<storage, read> h: array<HistWord>;
@group(0) @binding(4) var<storage, read> y: array<u32>;
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(6) var<storage, read_write> g_top: array<f32>;
@group(0) @binding(7) var<storage, read_write> grad_v: array<f32>;
@group(0) @binding(8) var<storage, read_write> grad_c: array<f32>;
@group(0) @binding(9) var<storage, read_write> stats: array<f32>;

fn load_h(i: u32) -> f32 {
    return hist_value(h[hist_word(i)], i);
}

@compute @workgroup_size(WG)
fn head_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wg.x;
    let d = dims.hidden;
    let q = dims.outputs;
    let n = dims.batch * q;
    let z_row = b * q;
    let dz_row = n + b * q;
    let h_row = dims.last + b * hist_stride(d);
    for (var k = lid; k < q; k += WG) {
        var z = c[k];
        for (var j = 0u; j < d; j++) {
            z += v[k * d + j] * load_h(h_row + j);
        }
        scratch[z_row + k] = z;
    }
    storageBarrier();
    // q is small: one invocation does the softmax or the squared error of the row.
    if lid == 0u {
        var loss = 0.0;
        var hits = 0.0;
        if dims.loss == CROSS_ENTROPY {
            let label = y[b];
            var top = scratch[z_row];
            var argmax = 0u;
            for (var k = 1u; k < q; k++) {
                let z = scratch[z_row + k];
                if z > top {
                    top = z;
                    argmax = k;
                }
            }
            var sum = 0.0;
            for (var k = 0u; k < q; k++) {
                sum += exp(scratch[z_row + k] - top);
            }
            loss = top + log(sum) - scratch[z_row + label];
            hits = select(0.0, 1.0, argmax == label);
            for (var k = 0u; k < q; k++) {
                let p = exp(scratch[z_row + k] - top) / sum;
                scratch[dz_row + k] = (p - select(0.0, 1.0, k == label)) / f32(dims.batch);
            }
        } else {
            for (var k = 0u; k < q; k++) {
                let diff = scratch[z_row + k] - bitcast<f32>(y[b * q + k]);
                loss += diff * diff;
                hits += select(0.0, 1.0, abs(diff) < REGRESSION_HIT);
                scratch[dz_row + k] = 2.0 * diff / f32(n);
            }
        }
        scratch[2u * n + 2u * b] = loss;
        scratch[2u * n + 2u * b + 1u] = hits;
    }
    storageBarrier();
    for (var i = lid; i < d; i += WG) {
        var g = 0.0;
        for (var k = 0u; k < q; k++) {
            g += scratch[dz_row + k] * v[k * d + i];
        }
        g_top[b * d + i] = g;
    }
}

@compute @workgroup_size(WG)
fn head_params(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.y * dims.row_stride + gid.x;
    let d = dims.hidden;
    let q = dims.outputs;
    let nb = dims.batch;
    let n = nb * q;
    if idx < q * d {
        let k = idx / d;
        let j = idx % d;
        var g = 0.0;
        for (var b = 0u; b < nb; b++) {
            g += scratch[n + b * q + k] * load_h(dims.last + b * hist_stride(d) + j);
        }
        grad_v[idx] = g;
    } else if idx < q * d + q {
        let k = idx - q * d;
        var g = 0.0;
        for (var b = 0u; b < nb; b++) {
            g += scratch[n + b * q + k];
        }
        grad_c[k] = g;
    } else if idx == q * d + q {
        var loss = 0.0;
        var hits = 0.0;
        for (var b = 0u; b < nb; b++) {
            loss += scratch[2u * n + 2u * b];
            hits += scratch[2u * n + 2u * b + 1u];
        }
        let count = f32(select(n, nb, dims.loss == CROSS_ENTROPY));
        stats[0] = loss / count;
        stats[1] = hits / count;
    }
}
