// One optimizer step on all parameters at once (twin of src/cpu/optimizer.rs), PyTorch's
// conventions. θ, ∇, and the slots m, v are flat buffers holding every tensor (with
// alignment padding, whose zero gradients leave it at zero). The elements head_start ..
// head_end − 1 (the head's V and c; an empty range for DTP's reverse layer) take the
// learning rate lr_head, the others lr (`--lr-head`, docs/ALGORITHM.md §8). With clip > 0
// (`--clip-norm`) every gradient is first scaled by min(1, clip / (‖∇‖ + 1e-6)), PyTorch's
// clip_grad_norm_, ‖∇‖ over the launch's range in norm[0] beforehand (sum_sq.wgsl,
// gpu::norms::RangeNorm).
//
//     SGD:       θ -= lr g
//     Nesterov:  m = μ m + g;  θ -= lr (g + μ m)
//     Adam:      m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²;
//                θ -= lr (m / c1) / (sqrt(v / c2) + eps),  c_i = 1 - β_i^step (from the host)

const WG: u32 = 256u;
const SGD: u32 = 0u;
const NESTEROV: u32 = 1u;
// config::CLIP_EPS.
const CLIP_EPS: f32 = 1e-6;

struct Settings {
    len: u32,
    kind: u32,
    // Invocations per row of the (possibly 2-D) grid.
    row_stride: u32,
    lr: f32,
    momentum: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    c1: f32,
    c2: f32,
    lr_head: f32,
    head_start: u32,
    head_end: u32,
    // The largest gradient norm, or 0: no clipping.
    clip: f32,
}

@group(0) @binding(0) var<uniform> cfg: Settings;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> theta: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> norm: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * cfg.row_stride + gid.x;
    if i >= cfg.len {
        return;
    }
    var g = grad[i];
    if cfg.clip > 0.0 {
        g *= min(1.0, cfg.clip / (norm[0] + CLIP_EPS));
    }
    let lr = select(cfg.lr, cfg.lr_head, i >= cfg.head_start && i < cfg.head_end);
    if cfg.kind == SGD {
        theta[i] -= lr * g;
    } else if cfg.kind == NESTEROV {
        let buf = cfg.momentum * m[i] + g;
        m[i] = buf;
        theta[i] -= lr * (g + cfg.momentum * buf);
    } else {
        let m1 = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * g;
        let v1 = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * g * g;
        m[i] = m1;
        v[i] = v1;
        theta[i] -= lr * (m1 / cfg.c1) / (sqrt(v1 / cfg.c2) + cfg.eps);
    }
}
