// Convergence bookkeeping of the batched CG solve, on the device so that the host never
// waits inside an iteration (twin of the stopping rule of src/cpu/inverse.rs::inverse_cg).
// A single workgroup sums the per-column squares into the relative residual
// ‖R‖_F / ‖Wᵀ‖_F and, once it is ≤ tol, zeroes the indirect grids of the next iterations'
// matmuls and cg_update: the host records cg_max_iter iterations and the converged ones
// cost nothing.
//
// mode START (after cg_init): resets the count and stores ‖Wᵀ‖_F.
// mode ITERATION (after each cg_update): counts the iteration unless already converged.
// mode FINISH: a solve that never converged adds to the sticky `failures` and
//   `worst_residual`, which the host reads (and clears) when it asks for statistics.

const WG: u32 = 256u;
const START: u32 = 0u;
const ITERATION: u32 = 1u;
const FINISH: u32 = 2u;
const F32_MAX: f32 = 3.40282347e38;

struct Dims {
    n: u32,
    mode: u32,
    tol: f32,
    // Grid of one n×n matmul (workgroups along x and y).
    matmul_groups: u32,
}

struct CgState {
    iterations: u32,
    converged: u32,
    residual: f32,
    rhs_norm: f32,
    failures: u32,
    worst_residual: f32,
    worst_iterations: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> col: array<f32>;
@group(0) @binding(2) var<storage, read_write> state: CgState;
// Indirect grids: matmul (x, y, z), then cg_update (x, y, z).
@group(0) @binding(3) var<storage, read_write> grids: array<u32, 6>;

var<workgroup> sum_rs: array<f32, WG>;
var<workgroup> sum_wn: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    let n = dims.n;
    var rs = 0.0;
    var wn = 0.0;
    for (var j = lid; j < n; j += WG) {
        rs += col[j];
        wn += col[n + j];
    }
    sum_rs[lid] = rs;
    sum_wn[lid] = wn;
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if lid < stride {
            sum_rs[lid] += sum_rs[lid + stride];
            sum_wn[lid] += sum_wn[lid + stride];
        }
    }
    if lid != 0u {
        return;
    }
    if dims.mode == FINISH {
        if state.converged == 0u {
            state.failures += 1u;
            if !(state.worst_residual >= state.residual) {
                state.worst_residual = state.residual;
                state.worst_iterations = state.iterations;
            }
        }
        return;
    }
    if dims.mode == START {
        state.iterations = 0u;
        state.converged = 0u;
        state.rhs_norm = sqrt(sum_wn[0]);
    } else if state.converged == 1u {
        return;
    } else {
        state.iterations += 1u;
    }
    // W = 0 gives a zero right-hand side: the residual is then 0 once X is 0. A W with
    // non-finite entries (a diverged model) must not pass for converged: its residual is
    // made the (infinite or NaN) norm itself, which fails `≤ tol`.
    var residual = sqrt(sum_rs[0]) / max(state.rhs_norm, 1e-30);
    if !(state.rhs_norm <= F32_MAX) {
        residual = state.rhs_norm;
    }
    state.residual = residual;
    if residual <= dims.tol {
        state.converged = 1u;
    }
    let live = select(1u, 0u, state.converged == 1u);
    grids[0] = dims.matmul_groups * live;
    grids[1] = dims.matmul_groups * live;
    grids[2] = live;
    grids[3] = n * live;
    grids[4] = live;
    grids[5] = live;
}
