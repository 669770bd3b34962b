// What one step of a time loop costs a device besides its arithmetic, one ingredient at a
// time (`tpri bench --probes`; host side src/gpu/step_probe.rs, whose check is the CPU
// twin: every value this kernel writes must be dims.steps; docs/PERFORMANCE.md, "Step
// probes"). forward.wgsl, bptt.wgsl and sweep_bptt.wgsl took about 1 µs a step on an H200
// where their arithmetic takes a fraction of that; these loops tell which ingredient costs.
//
// Each workgroup runs dims.steps steps of a chain through workgroup memory, as the time
// loops do: at step t invocation i adds one to its neighbour's value of step t − 1 (two
// halves, alternating, one barrier a step), so that every step waits for the one before.
// MODE adds one ingredient to every step:
//   0: nothing else;
//   1: a global load on the chain: the one comes from src, loaded in the step that adds it
//      (forward.wgsl's x_t before the blocks);
//   2: the same load issued a step ahead (bptt.wgsl's with lanes before the blocks);
//   3: a global store of the step's value (the histories' stores);
//   4: the loads of STAGE_LOADS steps issued at once into the invocation's own part of
//      workgroup memory, read from there (the blocks' staging);
//   5: a second barrier (the lanes' finishing).
// src holds ones, so the chain's last values are dims.steps whatever the mode; they go to
// the last row of dst, which mode 3 also fills row by row.

override MODE: u32 = 0u;

// Invocations per workgroup: forward.wgsl's at d ≤ 128 with one lane.
const WG: u32 = 128u;

struct Dims {
    steps: u32,
    groups: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
// [steps + STAGE_LOADS, groups, WG] ones: each workgroup its own, as each sequence has its
// own inputs.
@group(0) @binding(1) var<storage, read> src: array<f32>;
// [steps + 1, groups, WG].
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// The chain's two halves, then each invocation's staged ones (mode 4).
var<workgroup> buf: array<f32, 2u * WG + STAGE_LOADS * WG>;

// gpu::kernel appends include/limits.wgsl (STAGE_LOADS).

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    buf[lid] = 0.0;
    workgroupBarrier();
    // Where the workgroup's ones of step t start: at (t · groups + g) · WG.
    let row = wg.x * WG + lid;
    let stride = dims.groups * WG;
    var ahead = 0.0;
    if MODE == 2u {
        ahead = src[row];
    }
    for (var t = 0u; t < dims.steps; t++) {
        var one = 1.0;
        if MODE == 1u {
            one = src[t * stride + row];
        } else if MODE == 2u {
            one = ahead;
            ahead = src[(t + 1u) * stride + row];
        } else if MODE == 4u {
            let q = t % STAGE_LOADS;
            if q == 0u {
                var loaded: array<f32, STAGE_LOADS>;
                for (var r = 0u; r < STAGE_LOADS; r++) {
                    loaded[r] = src[(t + r) * stride + row];
                }
                for (var r = 0u; r < STAGE_LOADS; r++) {
                    buf[2u * WG + r * WG + lid] = loaded[r];
                }
            }
            one = buf[2u * WG + q * WG + lid];
        }
        let value = buf[(t & 1u) * WG + (lid + 1u) % WG] + one;
        if MODE == 5u {
            workgroupBarrier();
        }
        buf[((t + 1u) & 1u) * WG + lid] = value;
        if MODE == 3u {
            dst[t * stride + row] = value;
        }
        workgroupBarrier();
    }
    dst[dims.steps * stride + row] = buf[(dims.steps & 1u) * WG + lid];
}
