// The tanh RNN's target offsets dv = v − h: the bracket each step of the target sweep
// multiplies by P, and the zeroing of dv_0. gpu::kernel appends this file to
// target_sweep.wgsl (the sweep alone) and sweep_bptt.wgsl (the sweep fused with the
// surrogate's BPTT), so that the two compute the same offsets bit for bit.
//
// The kernel provides, besides `WG`, include/activation.wgsl (clamp_eps) and the history
// storage (include/history.wgsl): `dims.hidden` (d) and the history
// `dv: array<HistWord>` [T+1, B, d'] (read_write).

const LINEARIZED: u32 = 0u;
const DIFFERENCE: u32 = 1u;

// atanh accurate to a few ulp also near 0, where the usual ½ log((1+u)/(1-u)) loses
// all relative precision: a short odd series there (next term < 1e-12 at |u| = 1/8).
fn atanh_f32(u: f32) -> f32 {
    if abs(u) < 0.125 {
        let u2 = u * u;
        return u * (1.0 + u2 * (1.0 / 3.0 + u2 * (0.2 + u2 * (1.0 / 7.0 + u2 * (1.0 / 9.0 + u2 / 11.0)))));
    }
    return 0.5 * log((1.0 + u) / (1.0 - u));
}

// atanh(clamp(h + dv)) - atanh(clamp(h)) as atanh((a - b) / (1 - a b)), with a - b = dv
// exactly when neither value is clamped and 1 - a b formed without cancellation.
fn atanh_difference(ht: f32, dvt: f32) -> f32 {
    let a = clamp_eps(ht + dvt);
    let b = clamp_eps(ht);
    let num = select(a - b, dvt, a == ht + dvt && b == ht);
    // 1 - ab = (1 - b) + b (1 - a) = (1 + b) - b (1 + a); the first is exact-ish for b
    // near 1, the second for b near -1.
    let den = select((1.0 + b) - b * (1.0 + a), (1.0 - b) + b * (1.0 - a), b >= 0.0);
    return atanh_f32(num / den);
}

// The bracket of the offset modes (`mode` LINEARIZED or DIFFERENCE) at one unit: from h_t,
// the offset dv_t and the local target's offset `own` (0 without outputs at every step),
//     linearized:  (dv_t + own) ⊘ (1 − clamp(h_t)²)
//     difference:  atanh(clamp v_t) − atanh(clamp h_t) [+ the same for the local target]
fn offset_bracket(mode: u32, ht: f32, dvt: f32, own: f32, local: bool) -> f32 {
    if mode == LINEARIZED {
        let c = clamp_eps(ht);
        return (dvt + own) / (1.0 - c * c);
    }
    var sj = atanh_difference(ht, dvt);
    if local {
        sj += atanh_difference(ht, own);
    }
    return sj;
}

// Zeroes the n consecutive rows of dv starting at element `row`.
fn zero_rows(row: u32, n: u32, lid: u32) {
    let words = hist_word(n * hist_stride(dims.hidden));
    let first = hist_word(row);
    for (var k = lid; k < words; k += WG) {
        dv[first + k] = HistWord();
    }
}
