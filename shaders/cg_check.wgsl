// The report of the solve for P (jacobian.wgsl's inverse_columns), on the device so that
// the host never waits inside an iteration (twin of the stopping rule of
// src/cpu/inverse.rs::inverse_cg). A single workgroup turns the per-column records into
// the reference's numbers: iterations = the most any column ran, residual =
// ‖R‖_F / ‖Wᵀ‖_F. A solve whose residual is above tol (or not finite) adds to the sticky
// `failures` and `worst_residual`, which the host reads (and clears) with the statistics.
//
// Each column stopped on its own ‖R_j‖ / ‖(Wᵀ)_{:,j}‖ ≤ tol, which implies the Frobenius
// rule; a column that missed it may still leave the whole solve within tol, as the
// reference (which stops all columns together) would judge it.

const WG: u32 = 256u;

// F32_MAX: include/limits.wgsl, which gpu::kernel appends to this file.

struct Dims {
    n: u32,
    tol: f32,
}

struct CgState {
    iterations: u32,
    residual: f32,
    failures: u32,
    worst_residual: f32,
    worst_iterations: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
// Per column: iterations, ‖R_j‖², ‖(Wᵀ)_{:,j}‖².
@group(0) @binding(1) var<storage, read> columns: array<f32>;
@group(0) @binding(2) var<storage, read_write> state: CgState;

var<workgroup> sum_rs: array<f32, WG>;
var<workgroup> sum_wn: array<f32, WG>;
var<workgroup> most: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    var rs = 0.0;
    var wn = 0.0;
    var iterations = 0.0;
    for (var j = lid; j < dims.n; j += WG) {
        iterations = max(iterations, columns[3u * j]);
        rs += columns[3u * j + 1u];
        wn += columns[3u * j + 2u];
    }
    sum_rs[lid] = rs;
    sum_wn[lid] = wn;
    most[lid] = iterations;
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if lid < stride {
            sum_rs[lid] += sum_rs[lid + stride];
            sum_wn[lid] += sum_wn[lid + stride];
            most[lid] = max(most[lid], most[lid + stride]);
        }
    }
    if lid != 0u {
        return;
    }
    state.iterations = u32(most[0]);
    let rhs_norm = sqrt(sum_wn[0]);
    // W = 0 gives a zero right-hand side, solved exactly by X = 0. A W with non-finite
    // entries (a diverged model) must not pass for converged: its residual is made the
    // (infinite or NaN) norm itself, which fails `≤ tol`.
    var residual = sqrt(sum_rs[0]) / max(rhs_norm, 1e-30);
    if !(rhs_norm <= F32_MAX) {
        residual = rhs_norm;
    }
    state.residual = residual;
    if !(residual <= dims.tol) {
        state.failures += 1u;
        if !(state.worst_residual >= residual) {
            state.worst_residual = residual;
            state.worst_iterations = state.iterations;
        }
    }
}
