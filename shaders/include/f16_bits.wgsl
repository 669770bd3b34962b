// History words as u32 and f16 conversions as integer code (appended after
// include/history.wgsl; every adapter, both storages): not
// pack2x16float/unpack2x16float, which wgpu treats as a downlevel capability
// (SHADER_F16_IN_F32) that some adapters lack — Mesa's llvmpipe without native f16 — and a
// module that merely mentions them fails to compile there, f32 variant included. This code
// runs on every adapter and rounds to nearest even everywhere.

alias HistWord = u32;

fn hist_f32(v: f32) -> HistWord {
    return bitcast<u32>(v);
}

fn word_f32(word: HistWord) -> f32 {
    return bitcast<f32>(word);
}

// Element i & 1 of a word of two binary16 values (element 0 in the low half).
fn f16_half(word: HistWord, i: u32) -> f32 {
    return f16_bits_to_f32((word >> (16u * (i & 1u))) & 0xffffu);
}

// The word holding (lo, hi), each rounded to binary16.
fn hist_pair(lo: f32, hi: f32) -> HistWord {
    return f32_to_f16_bits(lo) | (f32_to_f16_bits(hi) << 16u);
}

// binary16 bits → f32, exactly (subnormals, infinities and NaN included).
fn f16_bits_to_f32(bits: u32) -> f32 {
    let sign = (bits & 0x8000u) << 16u;
    let exponent = (bits >> 10u) & 0x1fu;
    let mantissa = bits & 0x3ffu;
    if exponent == 0u {
        // Zero or subnormal: mantissa · 2⁻²⁴.
        let magnitude = f32(mantissa) * bitcast<f32>(0x33800000u);
        return select(magnitude, -magnitude, sign != 0u);
    }
    if exponent == 31u {
        return bitcast<f32>(sign | 0x7f800000u | (mantissa << 13u));
    }
    return bitcast<f32>(sign | ((exponent + 112u) << 23u) | (mantissa << 13u));
}

// f32 → binary16 bits, rounded to nearest even; overflow gives ±infinity, NaN stays NaN.
fn f32_to_f16_bits(v: f32) -> u32 {
    let x = bitcast<u32>(v);
    let sign = (x >> 16u) & 0x8000u;
    let a = x & 0x7fffffffu;
    if a > 0x7f800000u {
        return sign | 0x7e00u;
    }
    // 65520 = 0x477ff000 and above round to infinity.
    if a >= 0x477ff000u {
        return sign | 0x7c00u;
    }
    // Below 2⁻¹⁴ = 0x38800000: subnormal. |v|·2²⁴ is exact, and round() rounds half to
    // even; a result of 0x400 is the smallest normal, correctly encoded.
    if a < 0x38800000u {
        return sign | u32(round(abs(v) * 16777216.0));
    }
    // Normal: rebias the exponent (127 − 15 = 112) and round 23 mantissa bits to 10,
    // half to even; a carry moves into the exponent as it should.
    let r = a - 0x38000000u;
    return sign | ((r + 0xfffu + ((r >> 13u) & 1u)) >> 13u);
}
