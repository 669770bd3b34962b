// History words as vec2<f16> (appended after include/history.wgsl; the host prepends
// `enable f16;` and compiles this variant for f16 storage on devices with wgpu's
// SHADER_F16 only). The buffers hold the same bytes as with include/f16_bits.wgsl, element
// 2k in the low half of each 32-bit word, but a load or store converts with one
// instruction instead of f16_bits.wgsl's integer code.
//
// WGSL lets an implementation round an f32 that falls between two f16 values to either of
// them (f16_bits.wgsl rounds to nearest even; so do the drivers we have seen), and a value
// between 65 504 and 65 536 in magnitude to ±65 504 or ±∞; from 65 536 on it gives ±∞.

alias HistWord = vec2<f16>;

// f32 storage never compiles this file: `hist_f32` and `word_f32` exist for the type
// checker only (the kernels' f32 branches), and would keep just an f16 of the value.
fn hist_f32(v: f32) -> HistWord {
    return vec2<f16>(f16(v), 0.0h);
}

fn word_f32(word: HistWord) -> f32 {
    return f32(word.x);
}

// Element i & 1 of a word of two binary16 values.
fn f16_half(word: HistWord, i: u32) -> f32 {
    return f32(word[i & 1u]);
}

// The word holding (lo, hi), each converted to binary16.
fn hist_pair(lo: f32, hi: f32) -> HistWord {
    return vec2<f16>(vec2<f32>(lo, hi));
}
