// Forward pass of the GRU, fused over time (twin of src/cpu/gru.rs::gru_forward).
//
//     r_t = σ(W_r h + U_r x + b_ir + b_hr)        hn_t = W_n h + b_hn
//     z_t = σ(W_z h + U_z x + b_iz + b_hz)        n_t  = tanh(U_n x + b_in + r_t ⊙ hn_t)
//     h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1},      h = h_{t−1}, x = x_t, h_0 = 0
//
// One workgroup per sequence walks t = 1..T, as forward.wgsl does for the tanh RNN:
// h_{t−1} sits in workgroup memory because every unit reads all of it, and invocation
// `lid` owns units lid, lid + WG, ... Each invocation forms all three gates of its units
// in one pass over h_{t−1}, reading the rows i, d + i, 2d + i of W through Wᵀ (so that
// neighbouring invocations read neighbouring addresses), eight terms per loop iteration
// (include/dot.wgsl's gate_columns_dot8; see there for llvmpipe's loop cap).
//
// Lanes per unit (LANES, the host's `--lanes-per-unit` for the GRU's forward pass), as in
// forward.wgsl: with LANES = L > 1 the three gates' sums of unit i are split over L
// invocations, lane l summing include/dot.wgsl's lane_chunk l of the eight-term part, so
// that a step's serial chain is about d/L terms of three gates instead of d. The lanes
// write their partial sums into the half that step t writes h_t into, lane l's gate g of
// unit i at (3l + g)·d + i (3·L·d ≤ MAX_HIDDEN: the host checks it); nobody reads that
// half during step t before h_t is complete. After a barrier the finisher of unit i
// (invocation i mod WG) adds them in lane order onto b_hh, then the last d % 8 terms, and
// writes h_t over lane 0's partial of gate r, which only it reads. At LANES = 1 the lane
// code is compiled out: one barrier a step, the sums of one pass, as before lanes.
//
// Bounded segments, as in forward.wgsl: one launch runs the steps dims.first ..
// dims.first + dims.count − 1, and starts from h_{first−1} as the previous segment stored it
// (the GRU's history is f32, so it is exactly the value one long launch would carry on).
//
// Besides h it stores each step's r, z, n and hn: the backward recursion (gru_bptt.wgsl)
// and the Jacobian products (jacobian.wgsl) linearize at them. Storing them costs 4d
// floats per step and sequence; recomputing them (as the f64 reference does) would cost
// the backward and every CG iteration of the sweep another pass over W.
//
// Layout, row-major: Wᵀ [d, 3d] (W = w_hh [3d, d], gates stacked r, z, n like PyTorch),
// U = w_ih [3d, p], b_ih and b_hh [3d], x [T, B, p], h [T+1, B, d] (step t of sequence s
// at (t*B + s)*d), gates [T, B, 4d] (step t of s at ((t−1)*B + s)*4d: r | z | n | hn).

// Invocations per workgroup: 64, 128 or 256 a lane, matched to d (gpu::kernel sets it with
// LANES: `Packing::new`).
override WG: u32 = 256u;

// Lanes per unit: 1, 2, 4, 8 or 16, set per pipeline.
override LANES: u32 = 1u;

// gpu::kernel appends to this file include/limits.wgsl (MAX_HIDDEN), include/dot.wgsl
// (gate_columns_dot8, gate_columns_rest; the operands are dot_matrix and dot_vector below)
// and include/activation.wgsl (sigmoid, safe_tanh).

struct Dims {
    batch: u32,
    steps: u32,
    input: u32,
    hidden: u32,
    // This segment's steps: first (1 … T) and how many.
    first: u32,
    count: u32,
    // forward.wgsl's blocks of steps (gpu::forward::dispatch_cell fills both cells' launches
    // alike): 0 here, and unused.
    block: u32,
    slot: u32,
    staged: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> wt: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read> b_ih: array<f32>;
@group(0) @binding(4) var<storage, read> b_hh: array<f32>;
@group(0) @binding(5) var<storage, read> x: array<f32>;
@group(0) @binding(6) var<storage, read_write> h: array<f32>;
@group(0) @binding(7) var<storage, read_write> gates: array<f32>;

// Two d-vectors: h_{t−1} and h_t, alternating halves (as forward.wgsl's), so one barrier
// a step separates the reads of h_{t−1} from the writes of h_{t+1} into the same half, and
// the recursion never reads back the history it stores.
var<workgroup> h_buf: array<f32, 2u * MAX_HIDDEN>;

// The half holding h_{t−1} at the step in hand (include/dot.wgsl's vector starts there).
var<private> prev_half: u32;

// include/dot.wgsl's operands: Wᵀ [d, 3d] and h_{t−1}.
fn dot_matrix(e: u32) -> f32 {
    return wt[e];
}

fn dot_vector(j: u32) -> f32 {
    return h_buf[prev_half + j];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    let d = dims.hidden;
    let p = dims.input;
    let first = dims.first;
    let start = ((first - 1u) * dims.batch + s) * d;
    // h_{first−1} into its half: h_0 = 0 (stored too), or the previous segment's last
    // state from the history.
    let start_half = ((first - 1u) & 1u) * MAX_HIDDEN;
    for (var i = lid; i < d; i += WG) {
        if first == 1u {
            h[start + i] = 0.0;
        }
        h_buf[start_half + i] = select(h[start + i], 0.0, first == 1u);
    }
    workgroupBarrier();
    // This invocation's lane of its units and the terms the lane sums.
    let lane = lid % LANES;
    let chunk = lane_chunk(d, lane, LANES);
    for (var t = first; t < first + dims.count; t++) {
        let x_row = ((t - 1u) * dims.batch + s) * p;
        let h_row = (t * dims.batch + s) * d;
        // h_{t−1} in one half, h_t into the other.
        prev_half = ((t - 1u) & 1u) * MAX_HIDDEN;
        let next = (t & 1u) * MAX_HIDDEN;
        let gate_row = ((t - 1u) * dims.batch + s) * 4u * d;
        if LANES > 1u {
            // Each lane's part of the three gates' sums, into the half of h_t.
            for (var i = lid / LANES; i < d; i += WG / LANES) {
                let part = gate_columns_dot8(i, d, chunk);
                let at = next + 3u * lane * d + i;
                h_buf[at] = part.x;
                h_buf[at + d] = part.y;
                h_buf[at + 2u * d] = part.z;
            }
            // All parts written; each finisher reads only its own units' (see the top).
            workgroupBarrier();
        }
        for (var i = lid; i < d; i += WG) {
            // Input parts U x_t + b_ih of the three gates.
            var xi = vec3<f32>(b_ih[i], b_ih[d + i], b_ih[2u * d + i]);
            for (var k = 0u; k < p; k++) {
                let xk = x[x_row + k];
                xi += vec3<f32>(u[i * p + k], u[(d + i) * p + k], u[(2u * d + i) * p + k]) * xk;
            }
            // Hidden parts W h_{t−1} + b_hh: row i of W_r is column i of Wᵀ, W_z's is d + i,
            // W_n's 2d + i. The biases come first, the last d % 8 terms last.
            var sum = vec3<f32>(b_hh[i], b_hh[d + i], b_hh[2u * d + i]);
            if LANES == 1u {
                sum += gate_columns_dot8(i, d, chunk);
            } else {
                for (var l = 0u; l < LANES; l++) {
                    let at = next + 3u * l * d + i;
                    sum += vec3<f32>(h_buf[at], h_buf[at + d], h_buf[at + 2u * d]);
                }
            }
            let gh = gate_columns_rest(sum, i, d);
            let r = sigmoid(xi.x + gh.x);
            let z = sigmoid(xi.y + gh.y);
            let hn = gh.z;
            let n = safe_tanh(xi.z + r * hn);
            let ht = (1.0 - z) * n + z * h_buf[prev_half + i];
            h[h_row + i] = ht;
            h_buf[next + i] = ht;
            gates[gate_row + i] = r;
            gates[gate_row + d + i] = z;
            gates[gate_row + 2u * d + i] = n;
            gates[gate_row + 3u * d + i] = hn;
        }
        // Everyone has read h_{t−1} and written h_t: the next step may overwrite h_{t−1}'s
        // half.
        workgroupBarrier();
    }
}
