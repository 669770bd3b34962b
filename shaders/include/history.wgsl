// Storage of the histories h and v − h (gpu::Storage; src/gpu/storage.rs). gpu::kernel
// appends this file to every kernel that reads or writes a history (WGSL declarations
// may come in any order; appending keeps the kernel's own line numbers in errors).
//
// HIST_F16 is set per pipeline. false: f32 values, one per u32 word. true: IEEE binary16
// values, two per word (element 2k in the low half, 2k + 1 in the high half), each row
// padded to even length so that no word spans two rows (rows belong to different
// workgroups; inside a workgroup, one invocation writes both halves of a word).
//
// A word is a `HistWord`; `hist_pair` (the f16 word holding elements 2k, 2k + 1 = lo, hi),
// `hist_f32` (the f32 word of a value), `f16_half` and `word_f32` come from one of two
// files appended after this one: include/f16_bits.wgsl (HistWord = u32,
// integer code, every adapter) or include/f16_native.wgsl (HistWord = vec2<f16>, adapters
// with wgpu's SHADER_F16, f16 storage only). The bytes in memory are the same; see there
// for how their rounding differs.

override HIST_F16: bool = false;

// Elements per history row of d values.
fn hist_stride(d: u32) -> u32 {
    return select(d, d + (d & 1u), HIST_F16);
}

// Index of the word holding element i.
fn hist_word(i: u32) -> u32 {
    return select(i, i >> 1u, HIST_F16);
}

// Element i, from the word holding it.
fn hist_value(word: HistWord, i: u32) -> f32 {
    if HIST_F16 {
        return f16_half(word, i);
    }
    return word_f32(word);
}
