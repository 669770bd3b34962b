// The tanh RNN's target offsets dv = v − h: the bracket each step of the target sweep
// multiplies by P, and the stores of a step's offsets into the dv history. gpu::kernel
// appends this file to target_sweep.wgsl (the sweep alone) and sweep_bptt.wgsl (the sweep
// fused with the surrogate's BPTT), so that the two compute the same offsets bit for bit.
//
// The kernel provides, besides `WG` and the history storage (include/history.wgsl):
//
//     dims.hidden, dims.dv_scale       d, and the power of two dv is stored multiplied by
//     dv: array<HistWord>              the history [T+1, B, d'] (read_write)
//     fn dv_value(e: u32) -> f32       offset e = k·d + i of the step in hand (workgroup memory)
//
// and include/activation.wgsl (clamp_eps).

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

// Writes the offsets of the workgroup's n sequences (dv_value, times dv_scale) as the rows
// of dv starting at element `row` (the sequences' rows are consecutive). Called after a
// barrier: f16 words pair units that other invocations computed.
fn store_rows(row: u32, n: u32, lid: u32) {
    let d = dims.hidden;
    if HIST_F16 {
        // Rows padded to even length: w = d'/2 words a row, each word two units of one row.
        let w = hist_stride(d) >> 1u;
        for (var e = lid; e < n * w; e += WG) {
            let k = e / w;
            let i = 2u * (e - k * w);
            let at = k * d + i;
            let next = select(0.0, dv_value(at + 1u), i + 1u < d);
            dv[hist_word(row) + e] = hist_pair(dv_value(at) * dims.dv_scale, next * dims.dv_scale);
        }
    } else {
        for (var e = lid; e < n * d; e += WG) {
            dv[row + e] = hist_f32(dv_value(e) * dims.dv_scale);
        }
    }
}

// Zeroes the n consecutive rows of dv starting at element `row`.
fn zero_rows(row: u32, n: u32, lid: u32) {
    let words = hist_word(n * hist_stride(dims.hidden));
    let first = hist_word(row);
    for (var k = lid; k < words; k += WG) {
        dv[first + k] = HistWord();
    }
}
