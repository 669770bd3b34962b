// Generalized regularized inversion (docs/ALGORITHM.md §5; twin of src/cpu/jacobian.rs): the Jacobian
// products of a cell's step map h_{t−1} ↦ h_t at the stored states, and the target sweep
// that solves each step's normal equations with them by CG, fused over time.
//
// Entry points (one file, so that the sweep runs exactly the products that are tested):
//   jvp:            out = J_t u      for every sequence (row) of u [B, d], t = dims.step
//   vjp:            out = J_tᵀ w
//   jacobian_sweep: v_T = h_T − γ_h g_T, then for t = T, ..., 2
//                   v_{t−1} = h_{t−1} + (J_tᵀ J_t + r I)⁻¹ J_tᵀ (v_t − h_t)
//   inverse_columns: P = (WᵀW + r I)⁻¹ Wᵀ of the analytic inversion (docs/ALGORITHM.md §4), one column
//                   per workgroup, by the same CG with J = W
//
// The cell is a uniform setting (dims.cell): every branch binds the same buffers.
//   tanh:  J_t u = D_t (W u),  J_tᵀ w = Wᵀ (D_t w),  D_t = diag(1 − h_t²)  (exact, unclamped)
//   linear (the analytic inversion solved per step, docs/ALGORITHM.md §4, `--solver per-step`): J = W and
//          the right-hand side Wᵀ [(v_t − h_t) ⊘ (1 − clamp(h_t)²)], so that each solve
//          applies P = (WᵀW + rI)⁻¹Wᵀ without forming it (the linearized target of §2)
//   GRU:   J_t u = (h_{t−1} − n) ⊙ dz + (1 − z) ⊙ dn + z ⊙ u, with du = W u (all three gates),
//          dr = r(1 − r) du_r, dz = z(1 − z) du_z, dn = (1 − n²)(dr ⊙ hn + r ⊙ du_n);
//          J_tᵀ w = z ⊙ w + Wᵀ dgh with dgh the step backward of gru_bptt.wgsl.
//
// Like target_sweep.wgsl the sweep stores the offsets dv_t = v_t − h_t (see there for why);
// the solve's unknown is exactly dv_{t−1}, its right-hand side J_tᵀ dv_t.
//
// One workgroup per sequence, invocation `lid` owning units lid, lid + WG, ... (at most
// SLOTS of them, kept in registers). Each sequence runs its own CG from zero at each step
// (α, β per sequence, as the reference's per-row CG), matrix-free: A p = J_tᵀ(J_t p) + r p.
// Vectors every unit reads (p for J_t p; D_t w or one gate of dgh for the transposed
// products) pass through one d-vector of workgroup memory.
//
// Preconditioner (dims.precondition, the jacobian inversion's `--precondition jacobi`): CG
// preconditioned by M⁻¹ = diag(r / (diag(J_tᵀJ_t) + r)), formed once per step's solve from
// the linearization (jacobi_owned; recomputed when a solve resumes in a later launch):
// directions from z = M⁻¹ r, step sizes from rᵀz, the stopping rule on r itself, on the
// right-hand side scaled by a power of two to about unit length (rhs_scale). Off, the
// iteration is plain CG, bit for bit as before it existed.
//
// Stopping rule: a sequence stops when its own relative residual ‖R_s‖ / ‖J_tᵀ dv_t,s‖ ≤ tol
// or after max_iter iterations. The f64 reference stops all rows together on the batch's
// ‖R‖_F / ‖rhs‖_F ≤ tol; workgroups cannot wait for each other inside a launch, and the
// per-sequence rule is the stricter one (it implies the batch rule), so every solve the
// GPU accepts also meets the reference's criterion. Each (t, s) records its iterations and
// residual in cg_steps; a solve that ends above tol (or non-finite) also adds to the sticky
// `failures` record, which the host reads (and clears) as a CgError with the numbers.
//
// Bounded segments: a whole sweep (T − 1 solves of up to max_iter iterations each) or one
// column's solve can run far longer than one launch should (a driver's watchdog; llvmpipe's
// silent cap on loop iterations per invocation). So jacobian_sweep and inverse_columns
// each run as a sequence of launches, each spending at most dims.budget *units* — setting
// up a step's solve, or one CG iteration — and the host records as many launches as the
// worst case needs (gpu::segments). Where a solve stands between launches is kept in the
// scratch part of cg_steps: the residual r and direction p of each solve, and a `Cursor`
// (which step, whether its solve has started, its iterations and squared norms); the
// iterate x is the output itself (dv_{t−1}, or P's column). Everything carried is f32 as
// in registers, so a solve split across launches computes exactly what one launch would.
// A solve that converges early leaves budget to the next step; launches after the last
// solve only read the cursor.
//
// Layout, row-major: W [g·d, d] (g = 1 tanh, 3 GRU), Wᵀ [d, g·d], h and dv [T+1, B, d],
// gates [T, B, 4d] (GRU: r | z | n | hn from gru_forward.wgsl), g_T [B, d],
// cg_steps [T, B, 2] (iterations, residual; step t at row (t−1)*B + s, step 1 unsolved: 0, 0);
// for inverse_columns P [d, d] in dv and cg_steps [d, 3]. From dims.scratch on, cg_steps
// holds the state of the N = dims.batch solves: r [N, d], p [N, d], cursors [N, CURSOR].

// Invocations per workgroup, matched to d by the host (gpu::jacobian::workgroup_size):
// 64, 128 or 256, at least d up to 256, so that few sit idle at every barrier.
override WG: u32 = 256u;
const GRU: u32 = 1u;
const LINEAR: u32 = 2u;

// gpu::kernel appends to this file include/limits.wgsl (MAX_HIDDEN; SLOTS, the units one
// invocation owns at most, since a d over 256 gets WG = 256; F32_MAX), include/dot.wgsl
// (column_dot, gate_columns_dot for J_t u; the operands are dot_matrix and dot_vector below),
// include/activation.wgsl (clamp_eps), include/gru.wgsl (load_gates, gru_step_backward:
// the step backward of gru_bptt.wgsl) and include/workgroup_sum.wgsl (workgroup_sum and
// its `partial`).

struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    // 0: tanh RNN, 1: GRU.
    cell: u32,
    // Step t of the single products (jvp, vjp).
    step: u32,
    max_iter: u32,
    lr_target: f32,
    reg: f32,
    tol: f32,
    // Start the CG from the P in the buffer (inverse_columns) rather than from zero.
    warm: u32,
    // The segment (jacobian_sweep, inverse_columns): 1 in the first launch, which sets
    // everything up; the units this launch may spend; where the solves' state starts in
    // cg_steps.
    first: u32,
    budget: u32,
    scratch: u32,
    // 1: the sweep's CG is preconditioned (jacobi_owned); 0: plain CG.
    precondition: u32,
}

// The sticky record of failed solves (cpu::inverse::CgError's numbers).
const FAILURES: u32 = 0u;
const WORST_ITERATIONS: u32 = 1u;
// Bits of the largest residual: non-negative f32 (and NaN above +inf) order like their bits.
const WORST_RESIDUAL: u32 = 2u;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> h: array<f32>;
@group(0) @binding(4) var<storage, read> gates: array<f32>;
@group(0) @binding(5) var<storage, read> g_top: array<f32>;
@group(0) @binding(6) var<storage, read_write> dv: array<f32>;
@group(0) @binding(7) var<storage, read_write> cg_steps: array<f32>;
@group(0) @binding(8) var<storage, read_write> failures: array<atomic<u32>, 3>;
@group(0) @binding(9) var<storage, read> vec_in: array<f32>;
@group(0) @binding(10) var<storage, read_write> vec_out: array<f32>;

// The one vector every unit reads; written only between barriers.
var<workgroup> shared_vec: array<f32, MAX_HIDDEN>;

// Values of the units an invocation owns: slot k is unit lid + k*WG.
alias Own = array<f32, SLOTS>;

fn owns(lid: u32, k: u32) -> bool {
    return lid + k * WG < dims.hidden;
}

// include/dot.wgsl's operands for J_t u: Wᵀ (W u sums down its columns, so that
// neighbouring invocations read neighbouring addresses) and the shared vector.
fn dot_matrix(e: u32) -> f32 {
    return wt[e];
}

fn dot_vector(j: u32) -> f32 {
    return shared_vec[j];
}

// Σ_j W[row0 + j][i] shared_vec[j]: (Wᵀ shared_vec)[i] over the block of rows from row0,
// for J_tᵀ w. The loop of include/dot.wgsl's column_dot, over W rather than Wᵀ: an
// accessor that read either would make jvp, which binds Wᵀ only, bind W as well
// (gpu::jacobian binds W for vjp, Wᵀ for jvp).
fn w_column_dot(row0: u32, i: u32) -> f32 {
    let d = dims.hidden;
    var acc = vec4<f32>(0.0);
    var j = 0u;
    for (; j + 8u <= d; j += 8u) {
        let c = (row0 + j) * d + i;
        acc += vec4<f32>(w[c], w[c + d], w[c + 2u * d], w[c + 3u * d])
            * vec4<f32>(shared_vec[j], shared_vec[j + 1u], shared_vec[j + 2u], shared_vec[j + 3u]);
        acc += vec4<f32>(w[c + 4u * d], w[c + 5u * d], w[c + 6u * d], w[c + 7u * d])
            * vec4<f32>(shared_vec[j + 4u], shared_vec[j + 5u], shared_vec[j + 6u], shared_vec[j + 7u]);
    }
    var sum = hsum(acc);
    for (; j < d; j++) {
        sum += w[(row0 + j) * d + i] * shared_vec[j];
    }
    return sum;
}

// Σ_j W[row0 + j][i]² shared_vec[j]: w_column_dot over the squares of W's entries, for the
// tanh cell's diag(J_tᵀJ_t) (jacobi_owned).
fn w_column_sq_dot(row0: u32, i: u32) -> f32 {
    let d = dims.hidden;
    var acc = vec4<f32>(0.0);
    var j = 0u;
    for (; j + 4u <= d; j += 4u) {
        let c = (row0 + j) * d + i;
        let m = vec4<f32>(w[c], w[c + d], w[c + 2u * d], w[c + 3u * d]);
        acc += m * m * vec4<f32>(shared_vec[j], shared_vec[j + 1u], shared_vec[j + 2u], shared_vec[j + 3u]);
    }
    var sum = hsum(acc);
    for (; j < d; j++) {
        let m = w[(row0 + j) * d + i];
        sum += m * m * shared_vec[j];
    }
    return sum;
}

// Where h_t of sequence s starts (t = 0 … T).
fn state_row(t: u32, s: u32) -> u32 {
    return (t * dims.batch + s) * dims.hidden;
}

// Where the gates of step t (1 … T) of sequence s start.
fn gate_row(t: u32, s: u32) -> u32 {
    return ((t - 1u) * dims.batch + s) * 4u * dims.hidden;
}

// Makes the owned values `v` the shared vector (all units), between barriers.
fn share(lid: u32, v: Own) {
    // Nobody may still be reading the previous shared vector.
    workgroupBarrier();
    for (var k = 0u; k < SLOTS; k++) {
        if !owns(lid, k) {
            break;
        }
        shared_vec[lid + k * WG] = v[k];
    }
    workgroupBarrier();
}

// D_t's entry for unit i: 1 − h_t² for the tanh cell, 1 for the linear one (J = W).
fn tanh_deriv(t: u32, s: u32, i: u32) -> f32 {
    if dims.cell == LINEAR {
        return 1.0;
    }
    let ht = h[state_row(t, s) + i];
    return 1.0 - ht * ht;
}

// J_t u for the owned units; u is the shared vector (call `share` first).
fn jvp_owned(t: u32, s: u32, lid: u32) -> Own {
    let d = dims.hidden;
    var out: Own;
    for (var k = 0u; k < SLOTS; k++) {
        if !owns(lid, k) {
            break;
        }
        let i = lid + k * WG;
        if dims.cell == GRU {
            // du = W u, the three gate rows i, d + i, 2d + i in one pass.
            let du = gate_columns_dot(i, d);
            let g = load_gates(gate_row(t, s), d, i);
            let dr = g.r * (1.0 - g.r) * du.x;
            let dz = g.z * (1.0 - g.z) * du.y;
            let dn = (1.0 - g.n * g.n) * (dr * g.hn + g.r * du.z);
            out[k] = (h[state_row(t - 1u, s) + i] - g.n) * dz + (1.0 - g.z) * dn + g.z * shared_vec[i];
        } else {
            // (W u)_i, down column i of Wᵀ.
            out[k] = tanh_deriv(t, s, i) * column_dot(i, d);
        }
    }
    return out;
}

// J_tᵀ w for the owned units of w. Uses the shared vector (barriers inside).
fn vjp_owned(t: u32, s: u32, lid: u32, wv: Own) -> Own {
    let d = dims.hidden;
    var out: Own;
    if dims.cell == GRU {
        // The step backward of gru_bptt.wgsl (cpu::gru::gru_step_backward), then
        // J_tᵀ w = z ⊙ w + Wᵀ dgh one gate block at a time.
        var own_dgh: array<vec3<f32>, SLOTS>;
        let gr = gate_row(t, s);
        for (var k = 0u; k < SLOTS; k++) {
            if !owns(lid, k) {
                break;
            }
            let i = lid + k * WG;
            let g = load_gates(gr, d, i);
            let da = gru_step_backward(wv[k], g, h[state_row(t - 1u, s) + i]);
            own_dgh[k] = vec3<f32>(da.x, da.y, da.z * g.r);
            out[k] = g.z * wv[k];
        }
        for (var gate = 0u; gate < 3u; gate++) {
            var part: Own;
            for (var k = 0u; k < SLOTS; k++) {
                if !owns(lid, k) {
                    break;
                }
                part[k] = own_dgh[k][gate];
            }
            share(lid, part);
            for (var k = 0u; k < SLOTS; k++) {
                if !owns(lid, k) {
                    break;
                }
                out[k] += w_column_dot(gate * d, lid + k * WG);
            }
        }
    } else {
        var dw: Own;
        for (var k = 0u; k < SLOTS; k++) {
            if !owns(lid, k) {
                break;
            }
            dw[k] = tanh_deriv(t, s, lid + k * WG) * wv[k];
        }
        share(lid, dw);
        for (var k = 0u; k < SLOTS; k++) {
            if !owns(lid, k) {
                break;
            }
            out[k] = w_column_dot(0u, lid + k * WG);
        }
    }
    return out;
}

// Σ_j (Σ_g a_g,j W_g[k0 + j][i])² over j < n, the shared vector holding the chunk's a_r,
// a_z, a_n at 0, GATE_CHUNK and 2·GATE_CHUNK: the GRU's diag(J_tᵀJ_t)_i over one chunk of
// rows without z (jacobi_owned), four rows per loop iteration.
fn gate_column_sq_sum(k0: u32, n: u32, i: u32) -> f32 {
    let d = dims.hidden;
    let dd = d * d;
    let cz = GATE_CHUNK;
    let cn = 2u * GATE_CHUNK;
    var acc = vec4<f32>(0.0);
    var j = 0u;
    for (; j + 4u <= n; j += 4u) {
        let c = (k0 + j) * d + i;
        let e = vec4<f32>(shared_vec[j], shared_vec[j + 1u], shared_vec[j + 2u], shared_vec[j + 3u])
            * vec4<f32>(w[c], w[c + d], w[c + 2u * d], w[c + 3u * d])
            + vec4<f32>(shared_vec[cz + j], shared_vec[cz + j + 1u], shared_vec[cz + j + 2u], shared_vec[cz + j + 3u])
            * vec4<f32>(w[c + dd], w[c + dd + d], w[c + dd + 2u * d], w[c + dd + 3u * d])
            + vec4<f32>(shared_vec[cn + j], shared_vec[cn + j + 1u], shared_vec[cn + j + 2u], shared_vec[cn + j + 3u])
            * vec4<f32>(w[c + 2u * dd], w[c + 2u * dd + d], w[c + 2u * dd + 2u * d], w[c + 2u * dd + 3u * d]);
        acc += e * e;
    }
    var sum = hsum(acc);
    for (; j < n; j++) {
        let c = (k0 + j) * d + i;
        let e = shared_vec[j] * w[c] + shared_vec[cz + j] * w[c + dd] + shared_vec[cn + j] * w[c + 2u * dd];
        sum += e * e;
    }
    return sum;
}

// Units of each of the GRU's three gate vectors that one pass of jacobi_owned shares:
// the three fit the shared vector together.
const GATE_CHUNK: u32 = MAX_HIDDEN / 3u;

// The Jacobi preconditioner of the owned units at step t: r / (diag(J_tᵀJ_t) + r), that is
// 1 / (diag + r) times r, a constant factor CG's iterates do not see; scaled so, m ≤ 1 is 1
// where the diagonal is small, and rᵀz stays within a factor of ‖r‖² instead of r times
// it (at r = 10⁴ the unscaled rᵀz of the tiny offsets the sweep carries underflowed f32
// where ‖r‖² did not, and stalled the solve). Here
// diag(J_tᵀJ_t)_i = Σ_k J_ki², column i of J_t (cpu::jacobian's normal_diagonal_into):
//   tanh: J_ki = D_k W_ki, so Σ_k D_k² W_ki².
//   GRU:  J_ki = z_k [k = i] + Σ_g a_g,k W_g[k][i] with a = (a_r, a_z, a_n) the step backward
//         of e = 1 (J_tᵀ w = z ⊙ w + Wᵀ (a ⊙ w)): the sum over k without z, then
//         (e + z_i)² − e² for the diagonal entry's e = Σ_g a_g,i W_g[i][i].
// Uses the shared vector (barriers inside, in uniform control flow).
fn jacobi_owned(t: u32, s: u32, lid: u32) -> Own {
    let d = dims.hidden;
    var diag: Own;
    if dims.cell == GRU {
        let gr = gate_row(t, s);
        var a: array<vec3<f32>, SLOTS>;
        for (var k = 0u; k < SLOTS; k++) {
            if !owns(lid, k) {
                break;
            }
            let i = lid + k * WG;
            let g = load_gates(gr, d, i);
            let da = gru_step_backward(1.0, g, h[state_row(t - 1u, s) + i]);
            a[k] = vec3<f32>(da.x, da.y, da.z * g.r);
        }
        for (var k0 = 0u; k0 < d; k0 += GATE_CHUNK) {
            let n = min(GATE_CHUNK, d - k0);
            // Nobody may still be reading the previous chunk (or shared vector).
            workgroupBarrier();
            for (var k = 0u; k < SLOTS; k++) {
                let i = lid + k * WG;
                if !owns(lid, k) {
                    break;
                }
                if i >= k0 && i < k0 + n {
                    shared_vec[i - k0] = a[k].x;
                    shared_vec[GATE_CHUNK + i - k0] = a[k].y;
                    shared_vec[2u * GATE_CHUNK + i - k0] = a[k].z;
                }
            }
            workgroupBarrier();
            for (var k = 0u; k < SLOTS; k++) {
                if !owns(lid, k) {
                    break;
                }
                diag[k] += gate_column_sq_sum(k0, n, lid + k * WG);
            }
        }
        for (var k = 0u; k < SLOTS; k++) {
            if !owns(lid, k) {
                break;
            }
            let i = lid + k * WG;
            let c = i * d + i;
            let e = a[k].x * w[c] + a[k].y * w[c + d * d] + a[k].z * w[c + 2u * d * d];
            let z = gates[gr + d + i];
            diag[k] += z * (2.0 * e + z);
        }
    } else {
        var dsq: Own;
        for (var k = 0u; k < SLOTS; k++) {
            if !owns(lid, k) {
                break;
            }
            let dk = tanh_deriv(t, s, lid + k * WG);
            dsq[k] = dk * dk;
        }
        share(lid, dsq);
        for (var k = 0u; k < SLOTS; k++) {
            if !owns(lid, k) {
                break;
            }
            diag[k] = w_column_sq_dot(0u, lid + k * WG);
        }
    }
    var m: Own;
    for (var k = 0u; k < SLOTS; k++) {
        if !owns(lid, k) {
            break;
        }
        m[k] = 1.0 / (1.0 + diag[k] / dims.reg);
    }
    return m;
}

// Two sums over the workgroup at once (include/workgroup_sum.wgsl's tree, on pairs): each
// component is added in workgroup_sum's order, so each is its sum, bit for bit.
var<workgroup> partial2: array<vec2<f32>, WG>;

fn workgroup_sum2(lid: u32, value: vec2<f32>) -> vec2<f32> {
    // Nobody may still be reading the previous sum.
    workgroupBarrier();
    partial2[lid] = value;
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if lid < stride {
            partial2[lid] += partial2[lid + stride];
        }
    }
    return workgroupUniformLoad(&partial2[0]);
}

// z = m ⊙ r over the owned units: the preconditioned residual.
fn own_scale(lid: u32, m: Own, r: Own) -> Own {
    var z: Own;
    for (var k = 0u; k < SLOTS; k++) {
        if !owns(lid, k) {
            break;
        }
        z[k] = m[k] * r[k];
    }
    return z;
}

// Σ_k a[k] b[k] over the owned units.
fn own_dot(lid: u32, a: Own, b: Own) -> f32 {
    var sum = 0.0;
    for (var k = 0u; k < SLOTS; k++) {
        if !owns(lid, k) {
            break;
        }
        sum += a[k] * b[k];
    }
    return sum;
}

fn load_owned(lid: u32, base: u32) -> Own {
    var v: Own;
    for (var k = 0u; k < SLOTS; k++) {
        if !owns(lid, k) {
            break;
        }
        v[k] = vec_in[base + lid + k * WG];
    }
    return v;
}

fn store_owned(lid: u32, base: u32, v: Own) {
    for (var k = 0u; k < SLOTS; k++) {
        if !owns(lid, k) {
            break;
        }
        vec_out[base + lid + k * WG] = v[k];
    }
}

@compute @workgroup_size(WG)
fn jvp(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    let base = s * dims.hidden;
    share(lid, load_owned(lid, base));
    store_owned(lid, base, jvp_owned(dims.step, s, lid));
}

@compute @workgroup_size(WG)
fn vjp(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    let base = s * dims.hidden;
    store_owned(lid, base, vjp_owned(dims.step, s, lid, load_owned(lid, base)));
}

// ‖R_s‖ / ‖rhs_s‖ from the squared norms: 0 for a zero right-hand side (nothing to solve),
// and the norm itself when it is not finite (a diverged model), which fails `≤ tol`.
fn relative_residual(rs: f32, rhs_norm: f32) -> f32 {
    if !(rhs_norm <= F32_MAX) {
        return rhs_norm;
    }
    if rhs_norm == 0.0 {
        return 0.0;
    }
    return sqrt(rs) / rhs_norm;
}

// One CG solve of (J_tᵀ J_t + r I) x = rhs in progress, matrix-free: the iterate, residual
// and direction of the owned units and the preconditioner's m (with dims.precondition),
// and (the same in every invocation) the iterations so far, the squared norms of the
// residual and of the right-hand side, rᵀz (‖r‖² for plain CG) and the power of two
// the preconditioned solve scales r, p and their products by (`rhs_scale`; 1 for plain
// CG). x and rhs_sq are unscaled.
struct Solve {
    x: Own,
    r: Own,
    p: Own,
    m: Own,
    iterations: u32,
    rs: f32,
    rhs_sq: f32,
    rz: f32,
    scale: f32,
}

// The power of two 2^k that brings a right-hand side of squared norm `rhs_sq` to about
// unit length, for the preconditioned solve: the offsets the sweep carries get tiny deep in
// the sweep (‖rhs‖² near f32's smallest normal, 1e-38), where rᵀz and pᵀAp, smaller than
// ‖r‖² by the preconditioner's factors, were flushed to zero (or to a few bits) before
// ‖r‖² was, and stalled or blew up the solve. Scaling by 2^k is exact and leaves CG's
// iterates as they are. 1 for plain CG, which stays bit for bit as it was, and for a zero
// or non-finite right-hand side.
fn rhs_scale(rhs_sq: f32) -> f32 {
    if dims.precondition != 1u || !(rhs_sq > 0.0 && rhs_sq <= F32_MAX) {
        return 1.0;
    }
    return ldexp(1.0, clamp(-i32(round(0.5 * log2(rhs_sq))), -120, 120));
}

// ‖R‖ / ‖rhs‖ of `sol` (its rs is scaled, its rhs_sq is not).
fn residual_of(sol: ptr<function, Solve>) -> f32 {
    return relative_residual((*sol).rs, sqrt((*sol).rhs_sq) * (*sol).scale);
}

// The first direction of `sol` from its residual: z = m ⊙ r with dims.precondition, r
// itself otherwise.
fn first_direction(lid: u32, sol: ptr<function, Solve>) {
    if dims.precondition == 1u {
        (*sol).p = own_scale(lid, (*sol).m, (*sol).r);
        (*sol).rz = workgroup_sum(lid, own_dot(lid, (*sol).r, (*sol).p));
    } else {
        (*sol).p = (*sol).r;
        (*sol).rz = (*sol).rs;
    }
}

// A solve from zero, or with dims.warm from `x0` (then the first residual costs one more
// product), preconditioned by `m` with dims.precondition. A zero right-hand side has the
// solution 0, whatever the warm start.
fn cg_start(t: u32, s: u32, lid: u32, rhs: Own, x0: Own, m: Own) -> Solve {
    var sol: Solve;
    sol.m = m;
    sol.r = rhs;
    sol.rs = workgroup_sum(lid, own_dot(lid, rhs, rhs));
    sol.rhs_sq = sol.rs;
    // `rhs_sq` is uniform (workgroup_sum), so the barriers inside stay in uniform control flow.
    if dims.warm == 1u && sol.rhs_sq > 0.0 {
        sol.x = x0;
        share(lid, x0);
        let ax = vjp_owned(t, s, lid, jvp_owned(t, s, lid));
        for (var k = 0u; k < SLOTS; k++) {
            if !owns(lid, k) {
                break;
            }
            sol.r[k] -= ax[k] + dims.reg * x0[k];
        }
        sol.rs = workgroup_sum(lid, own_dot(lid, sol.r, sol.r));
    }
    sol.scale = rhs_scale(sol.rhs_sq);
    if sol.scale != 1.0 {
        for (var k = 0u; k < SLOTS; k++) {
            if !owns(lid, k) {
                break;
            }
            sol.r[k] *= sol.scale;
        }
        sol.rs *= sol.scale * sol.scale;
    }
    first_direction(lid, &sol);
    return sol;
}

// Whether the solve is over: ‖R‖ / ‖rhs‖ ≤ tol (or not finite), or max_iter iterations run.
fn solved(sol: ptr<function, Solve>) -> bool {
    return !(residual_of(sol) > dims.tol) || (*sol).iterations >= dims.max_iter;
}

// CG iterations on `sol` until it is solved or `spent` units reach the budget; returns the
// units spent. `residual` and `iterations` are uniform, and so is the loop.
fn iterate(t: u32, s: u32, lid: u32, sol: ptr<function, Solve>, spent: u32) -> u32 {
    var used = spent;
    while !solved(sol) && used < dims.budget {
        share(lid, (*sol).p);
        var q = vjp_owned(t, s, lid, jvp_owned(t, s, lid));
        for (var k = 0u; k < SLOTS; k++) {
            if !owns(lid, k) {
                break;
            }
            q[k] += dims.reg * (*sol).p[k];
        }
        let curv = workgroup_sum(lid, own_dot(lid, (*sol).p, q));
        // A sequence already solved exactly has p = 0: leave it where it is.
        let alpha = select(0.0, (*sol).rz / curv, curv > 0.0);
        for (var k = 0u; k < SLOTS; k++) {
            if !owns(lid, k) {
                break;
            }
            if dims.precondition == 1u {
                (*sol).x[k] += alpha * (*sol).p[k] / (*sol).scale;
            } else {
                (*sol).x[k] += alpha * (*sol).p[k];
            }
            (*sol).r[k] -= alpha * q[k];
        }
        // The next direction from z = m ⊙ r, or from r itself for plain CG (rᵀz = ‖r‖²).
        var z = (*sol).r;
        var rs_new: f32;
        var rz_new: f32;
        if dims.precondition == 1u {
            z = own_scale(lid, (*sol).m, (*sol).r);
            // ‖r‖² and rᵀz through one tree: a sum's barriers are what a step waits on.
            let sums = workgroup_sum2(lid, vec2<f32>(own_dot(lid, (*sol).r, (*sol).r), own_dot(lid, (*sol).r, z)));
            rs_new = sums.x;
            rz_new = sums.y;
        } else {
            rs_new = workgroup_sum(lid, own_dot(lid, (*sol).r, (*sol).r));
            rz_new = rs_new;
        }
        let beta = select(0.0, rz_new / (*sol).rz, (*sol).rz > 0.0);
        for (var k = 0u; k < SLOTS; k++) {
            if !owns(lid, k) {
                break;
            }
            (*sol).p[k] = z[k] + beta * (*sol).p[k];
        }
        (*sol).rs = rs_new;
        (*sol).rz = rz_new;
        (*sol).iterations += 1u;
        used += 1u;
    }
    return used;
}

// Where solve n stands between launches: the step whose solve is due (jacobian_sweep:
// T … 2, then 1 when all are done; inverse_columns: 1, then 0), whether that solve has
// started, and its scalars.
struct Cursor {
    step: u32,
    started: bool,
    iterations: u32,
    rs: f32,
    rhs_sq: f32,
    rz: f32,
}

// f32 words per cursor in cg_steps: integers as two exact 16-bit halves.
const CURSOR: u32 = 8u;

var<workgroup> cursor_words: array<f32, CURSOR>;

fn r_at(n: u32) -> u32 {
    return dims.scratch + n * dims.hidden;
}

fn p_at(n: u32) -> u32 {
    return dims.scratch + (dims.batch + n) * dims.hidden;
}

fn cursor_at(n: u32) -> u32 {
    return dims.scratch + 2u * dims.batch * dims.hidden + CURSOR * n;
}

// Solve n's cursor as the previous launch left it, the same in every invocation.
fn load_cursor(lid: u32, n: u32) -> Cursor {
    if lid < CURSOR {
        cursor_words[lid] = cg_steps[cursor_at(n) + lid];
    }
    let c = workgroupUniformLoad(&cursor_words);
    return Cursor(u32(c[0]) | (u32(c[1]) << 16u), c[2] != 0.0, u32(c[3]) | (u32(c[4]) << 16u), c[5], c[6], c[7]);
}

fn store_cursor(lid: u32, n: u32, c: Cursor) {
    if lid == 0u {
        let at = cursor_at(n);
        cg_steps[at] = f32(c.step & 0xffffu);
        cg_steps[at + 1u] = f32(c.step >> 16u);
        cg_steps[at + 2u] = select(0.0, 1.0, c.started);
        cg_steps[at + 3u] = f32(c.iterations & 0xffffu);
        cg_steps[at + 4u] = f32(c.iterations >> 16u);
        cg_steps[at + 5u] = c.rs;
        cg_steps[at + 6u] = c.rhs_sq;
        cg_steps[at + 7u] = c.rz;
    }
}

fn load_scratch(lid: u32, base: u32) -> Own {
    var v: Own;
    for (var k = 0u; k < SLOTS; k++) {
        if !owns(lid, k) {
            break;
        }
        v[k] = cg_steps[base + lid + k * WG];
    }
    return v;
}

fn store_scratch(lid: u32, base: u32, v: Own) {
    for (var k = 0u; k < SLOTS; k++) {
        if !owns(lid, k) {
            break;
        }
        cg_steps[base + lid + k * WG] = v[k];
    }
}

// The owned units of dv_t's row from element `row` (the sweep's iterate x = dv_{t−1}).
fn load_row(lid: u32, row: u32) -> Own {
    var v: Own;
    for (var k = 0u; k < SLOTS; k++) {
        if !owns(lid, k) {
            break;
        }
        v[k] = dv[row + lid + k * WG];
    }
    return v;
}

fn store_row(lid: u32, row: u32, v: Own) {
    for (var k = 0u; k < SLOTS; k++) {
        if !owns(lid, k) {
            break;
        }
        dv[row + lid + k * WG] = v[k];
    }
}

// Column j of P [d, d] (inverse_columns' iterate x).
fn load_column(lid: u32, j: u32) -> Own {
    var v: Own;
    for (var k = 0u; k < SLOTS; k++) {
        if !owns(lid, k) {
            break;
        }
        v[k] = dv[(lid + k * WG) * dims.hidden + j];
    }
    return v;
}

fn store_column(lid: u32, j: u32, v: Own) {
    for (var k = 0u; k < SLOTS; k++) {
        if !owns(lid, k) {
            break;
        }
        dv[(lid + k * WG) * dims.hidden + j] = v[k];
    }
}

// The solve in `c` with its vectors from where `store_solve` left them (x from `x`; m, the
// preconditioner's, formed again by the caller; the scale again from rhs_sq).
fn resume(lid: u32, n: u32, c: Cursor, x: Own, m: Own) -> Solve {
    let r = load_scratch(lid, r_at(n));
    let p = load_scratch(lid, p_at(n));
    return Solve(x, r, p, m, c.iterations, c.rs, c.rhs_sq, c.rz, rhs_scale(c.rhs_sq));
}

// The preconditioner's m of step t's solve where the sweep has one (unread otherwise).
fn sweep_preconditioner(t: u32, s: u32, lid: u32) -> Own {
    var m: Own;
    if dims.precondition == 1u {
        m = jacobi_owned(t, s, lid);
    }
    return m;
}

// Keeps r and p of an unfinished solve for the next launch (x is kept by the caller).
fn store_solve(lid: u32, n: u32, sol: Solve) {
    store_scratch(lid, r_at(n), sol.r);
    store_scratch(lid, p_at(n), sol.p);
}

@compute @workgroup_size(WG)
fn jacobian_sweep(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    let d = dims.hidden;
    var c = Cursor(dims.steps, false, 0u, 0.0, 0.0, 0.0);
    if dims.first == 1u {
        let top = state_row(dims.steps, s);
        for (var k = 0u; k < SLOTS; k++) {
            if !owns(lid, k) {
                break;
            }
            let i = lid + k * WG;
            dv[s * d + i] = 0.0;
            dv[top + i] = -dims.lr_target * g_top[s * d + i];
        }
        if lid == 0u {
            cg_steps[2u * s] = 0.0;
            cg_steps[2u * s + 1u] = 0.0;
        }
    } else {
        c = load_cursor(lid, s);
    }
    var sol: Solve;
    if c.started {
        let m = sweep_preconditioner(c.step, s, lid);
        sol = resume(lid, s, c, load_row(lid, state_row(c.step - 1u, s)), m);
    }
    var spent = 0u;
    // Each pass sets up the solve of step t = c.step unless it has started, iterates within
    // the budget, and when the solve is over stores dv_{t−1} and moves on to t − 1.
    loop {
        if c.step < 2u || (!c.started && spent == dims.budget) {
            break;
        }
        let t = c.step;
        if !c.started {
            // Right-hand side J_tᵀ (v_t − h_t): dv_t of the owned units was written by this
            // invocation (the previous step's solution, or the top; in this launch or an
            // earlier one), so no barrier is needed.
            var u = load_row(lid, state_row(t, s));
            if dims.cell == LINEAR {
                for (var k = 0u; k < SLOTS; k++) {
                    if !owns(lid, k) {
                        break;
                    }
                    let hc = clamp_eps(h[state_row(t, s) + lid + k * WG]);
                    u[k] /= 1.0 - hc * hc;
                }
            }
            let m = sweep_preconditioner(t, s, lid);
            var cold: Own;
            sol = cg_start(t, s, lid, vjp_owned(t, s, lid, u), cold, m);
            c.started = true;
            spent += 1u;
        }
        spent = iterate(t, s, lid, &sol, spent);
        if !solved(&sol) {
            break;
        }
        store_row(lid, state_row(t - 1u, s), sol.x);
        if lid == 0u {
            let residual = residual_of(&sol);
            let at = 2u * ((t - 1u) * dims.batch + s);
            cg_steps[at] = f32(sol.iterations);
            cg_steps[at + 1u] = residual;
            if !(residual <= dims.tol) {
                atomicAdd(&failures[FAILURES], 1u);
                atomicMax(&failures[WORST_ITERATIONS], sol.iterations);
                atomicMax(&failures[WORST_RESIDUAL], bitcast<u32>(abs(residual)));
            }
        }
        c.step = t - 1u;
        c.started = false;
    }
    if c.started {
        store_row(lid, state_row(c.step - 1u, s), sol.x);
        store_solve(lid, s, sol);
    }
    store_cursor(lid, s, Cursor(c.step, c.started, sol.iterations, sol.rs, sol.rhs_sq, sol.rz));
}

// P = (WᵀW + r I)⁻¹ Wᵀ (docs/ALGORITHM.md §4) by CG, one workgroup per column j: with the linear cell
// (J = W) the system (WᵀW + r I) x_j = Wᵀ e_j, whose right-hand side is row j of W. P lives
// in `dv` as [d, d] row-major; with dims.warm each column starts from the P already there.
// h, gates and g_top are not read (bind any buffer). Per column, cg_steps [d, 3] gets the
// iterations, ‖R_j‖² and ‖(Wᵀ)_{:,j}‖², which cg_check.wgsl turns into the Frobenius report.
// In segments like the sweep's: the cursor's step is 1 until the column is solved, then 0.
@compute @workgroup_size(WG)
fn inverse_columns(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = wg.x;
    let d = dims.hidden;
    var c = Cursor(1u, false, 0u, 0.0, 0.0, 0.0);
    if dims.first != 1u {
        c = load_cursor(lid, j);
    }
    if c.step == 0u {
        return;
    }
    var sol: Solve;
    var spent = 0u;
    if c.started {
        var plain: Own;
        sol = resume(lid, j, c, load_column(lid, j), plain);
    } else {
        var rhs: Own;
        for (var k = 0u; k < SLOTS; k++) {
            if !owns(lid, k) {
                break;
            }
            rhs[k] = w[j * d + lid + k * WG];
        }
        var x0: Own;
        if dims.warm == 1u {
            x0 = load_column(lid, j);
        }
        var plain: Own;
        sol = cg_start(0u, j, lid, rhs, x0, plain);
        spent = 1u;
    }
    spent = iterate(0u, j, lid, &sol, spent);
    store_column(lid, j, sol.x);
    let done = solved(&sol);
    if done {
        if lid == 0u {
            cg_steps[3u * j] = f32(sol.iterations);
            cg_steps[3u * j + 1u] = sol.rs;
            cg_steps[3u * j + 2u] = sol.rhs_sq;
        }
    } else {
        store_solve(lid, j, sol);
    }
    store_cursor(lid, j, Cursor(select(1u, 0u, done), !done, sol.iterations, sol.rs, sol.rhs_sq, sol.rz));
}
