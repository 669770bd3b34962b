//! Every WGSL file in `shaders/` parses, validates, and translates to SPIR-V, MSL, HLSL and
//! GLSL — the languages wgpu hands to Vulkan, Metal, DX12 and GL drivers — in each variant
//! the backend compiles (the `HIST_F16` override of the history kernels set for f32 and
//! for f16 storage; the history kernels again with native f16 conversions, for the
//! backends that have `SHADER_F16`). No GPU needed.

use std::path::Path;

use naga::back::pipeline_constants::process_overrides;
use naga::back::PipelineConstants;
use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use tpri::gpu::Storage;

fn shader_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("readable shader"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no shaders found in {}", dir.display());
    files
}

/// `shaders/include/<name>` from disk.
fn include(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("shaders/include")
        .join(name);
    std::fs::read_to_string(path).expect("readable include")
}

/// The names of the files in `shaders/include/`, sorted.
fn include_names() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders/include");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("shaders/include/ exists")
        .map(|e| e.expect("readable directory entry").file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Whether a kernel file relies on the history include (it says so in a comment).
fn uses_history(source: &str) -> bool {
    source.contains("include/history.wgsl")
}

/// The includes every storage shares, in the order `gpu::kernel` appends them. A kernel
/// gets those it names in a comment as `include/<name>`; the history kernels get
/// `include/history.wgsl` and one file of f16 conversions after them.
const SHARED_INCLUDES: [&str; 8] = [
    "limits.wgsl",
    "dot.wgsl",
    "activation.wgsl",
    "gru.wgsl",
    "gate_brackets.wgsl",
    "workgroup_sum.wgsl",
    "noise.wgsl",
    "targets.wgsl",
];

/// The shared includes a kernel file names, in the order they are appended.
fn shared_includes(source: &str) -> Vec<&'static str> {
    SHARED_INCLUDES
        .into_iter()
        .filter(|name| source.contains(&format!("include/{name}")))
        .collect()
}

/// A kernel file as `gpu::kernel` should compose it: the file, then (after a newline
/// each) the shared includes it names, then for a history kernel `include/history.wgsl`
/// and `conversions` (an f16 conversions file).
fn composed(source: &str, conversions: &str) -> String {
    let mut out = source.to_string();
    for name in shared_includes(source) {
        out.push('\n');
        out.push_str(&include(name));
    }
    if uses_history(source) {
        out.push('\n');
        out.push_str(&include("history.wgsl"));
        out.push('\n');
        out.push_str(&include(conversions));
    }
    out
}

/// The value of `const <name>: <ty> = <value>;` in `source`, as written.
fn declared<'a>(source: &'a str, name: &str) -> Option<&'a str> {
    let start = source.find(&format!("const {name}: "))?;
    let line = source[start..].lines().next()?;
    Some(line.split_once(" = ")?.1.trim_end_matches(';'))
}

/// Parses and validates `source` granting `capabilities`: none for the kernels every
/// adapter runs (in particular not SHADER_FLOAT16_IN_FLOAT32, which pack2x16float would
/// need), SHADER_FLOAT16 for the native f16 variants.
fn validate(name: &str, source: &str, capabilities: Capabilities) -> (naga::Module, ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    let info = Validator::new(ValidationFlags::all(), capabilities)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    (module, info)
}

#[test]
fn every_shader_file_is_compiled_into_the_crate() {
    let mut embedded: Vec<_> = tpri::gpu::SHADERS.iter().map(|(n, _)| *n).collect();
    embedded.sort();
    let on_disk: Vec<_> = shader_files().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        embedded, on_disk,
        "gpu::SHADERS must list every file in shaders/"
    );
    // Every include is one the composition knows: a shared one or the history's.
    let mut known: Vec<_> = SHARED_INCLUDES
        .iter()
        .chain(&["history.wgsl", "f16_bits.wgsl", "f16_native.wgsl"])
        .map(|n| n.to_string())
        .collect();
    known.sort();
    assert_eq!(
        include_names(),
        known,
        "shaders/include/ must hold the includes gpu::kernel composes (SHARED_INCLUDES here)"
    );
    assert_eq!(
        tpri::gpu::HISTORY_WGSL,
        include("history.wgsl"),
        "stale include"
    );
    assert_eq!(
        tpri::gpu::F16_BITS_WGSL,
        include("f16_bits.wgsl"),
        "stale include"
    );
    assert_eq!(
        tpri::gpu::F16_NATIVE_WGSL,
        include("f16_native.wgsl"),
        "stale include"
    );
    // Each kernel is composed of itself and the includes it names, in order: the table in
    // gpu::kernel and the kernels' own comments agree.
    for (name, source) in shader_files() {
        let embedded = tpri::gpu::SHADERS.iter().find(|(n, _)| *n == name).unwrap();
        let native_variant = tpri::gpu::NATIVE_F16_SHADERS
            .iter()
            .find(|(n, _)| *n == name);
        assert!(
            embedded.1 == composed(&source, "f16_bits.wgsl"),
            "{name}: the embedded copy is stale, or gpu::kernel's table of includes disagrees \
             with the includes the file names ({:?}{})",
            shared_includes(&source),
            if uses_history(&source) {
                " and history.wgsl"
            } else {
                ""
            },
        );
        if uses_history(&source) {
            let native_variant = native_variant
                .unwrap_or_else(|| panic!("{name}: no native f16 variant"))
                .1;
            assert!(
                native_variant == format!("enable f16;\n{}", composed(&source, "f16_native.wgsl")),
                "{name}: embedded native f16 copy is stale"
            );
        } else {
            assert!(native_variant.is_none(), "{name}: touches no history");
        }
    }
}

/// Each shared include serves some kernel, and its opening comment names every kernel it
/// is appended to.
#[test]
fn every_shared_include_names_the_kernels_that_use_it() {
    let kernels = shader_files();
    for include_name in SHARED_INCLUDES {
        let text = include(include_name);
        let opening: String = text
            .lines()
            .take_while(|l| l.starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let users: Vec<_> = kernels
            .iter()
            .filter(|(_, source)| shared_includes(source).contains(&include_name))
            .map(|(name, _)| name)
            .collect();
        assert!(
            !users.is_empty(),
            "include/{include_name}: no kernel uses it"
        );
        for user in users {
            assert!(
                opening.contains(user.as_str()),
                "include/{include_name}: its opening comment must name {user}, which uses it"
            );
        }
    }
}

/// Every file under `shaders/`, kernels and includes, with its path there.
fn every_wgsl_file() -> Vec<(String, String)> {
    let mut files = shader_files();
    files.extend(
        include_names()
            .into_iter()
            .map(|n| (format!("include/{n}"), include(&n))),
    );
    files
}

/// The host's limit and the kernels' are one number, declared once in WGSL.
#[test]
fn max_hidden_agrees_with_the_host() {
    let value = format!("{}u", tpri::gpu::MAX_HIDDEN);
    assert_eq!(
        declared(&include("limits.wgsl"), "MAX_HIDDEN"),
        Some(value.as_str()),
        "include/limits.wgsl must declare `const MAX_HIDDEN: u32 = {value};` (gpu::MAX_HIDDEN)"
    );
    for (name, source) in every_wgsl_file() {
        if name != "include/limits.wgsl" {
            assert!(
                declared(&source, "MAX_HIDDEN").is_none(),
                "{name}: MAX_HIDDEN is declared once, in include/limits.wgsl"
            );
        }
    }
}

/// The most sequences per workgroup the host asks forward.wgsl for is the size of the
/// kernel's per-sequence sums, and every count it compiles fits there.
#[test]
fn max_seqs_agrees_with_the_host() {
    let value = format!("{}u", tpri::gpu::MAX_SEQUENCES_PER_WORKGROUP);
    assert_eq!(
        declared(&include("limits.wgsl"), "MAX_SEQS"),
        Some(value.as_str()),
        "include/limits.wgsl must declare `const MAX_SEQS: u32 = {value};` \
         (gpu::MAX_SEQUENCES_PER_WORKGROUP)"
    );
    let counts = tpri::gpu::SEQUENCES_PER_WORKGROUP;
    assert_eq!(
        counts.last().map(|&b| b as usize),
        Some(tpri::gpu::MAX_SEQUENCES_PER_WORKGROUP)
    );
    assert!(counts.iter().all(|b| b.is_power_of_two()));
}

/// The clamp margin of the inversions is config::CLAMP_EPS, declared once in WGSL.
#[test]
fn clamp_eps_agrees_with_the_host() {
    let activation = include("activation.wgsl");
    let value: f32 = declared(&activation, "CLAMP_EPS")
        .expect("include/activation.wgsl declares CLAMP_EPS")
        .parse()
        .expect("CLAMP_EPS is a plain f32 literal");
    assert_eq!(value, tpri::config::CLAMP_EPS as f32);
    for (name, source) in every_wgsl_file() {
        if name != "include/activation.wgsl" {
            assert!(
                declared(&source, "CLAMP_EPS").is_none(),
                "{name}: CLAMP_EPS is declared once, in include/activation.wgsl"
            );
        }
    }
}

/// The pipeline constants a compiled source is built with: one variant per storage
/// where it has the `HIST_F16` override (`Storage::pipeline_constants`), each also per
/// count of sequences per workgroup where it has the `SEQS` override (forward.wgsl), one
/// per workgroup size where it has the `WG` override (jacobian.wgsl), else none.
fn variants(source: &str) -> Vec<(String, PipelineConstants)> {
    if source.contains("override WG") && !source.contains("override LANES") {
        return tpri::gpu::WORKGROUP_SIZES
            .iter()
            .map(|&wg| {
                let constants = [("WG".to_string(), f64::from(wg))].into_iter().collect();
                (format!("WG = {wg}"), constants)
            })
            .collect();
    }
    if !source.contains("override HIST_F16") {
        return vec![("no overrides".into(), PipelineConstants::default())];
    }
    let seqs: &[u32] = if source.contains("override SEQS") {
        &tpri::gpu::SEQUENCES_PER_WORKGROUP
    } else {
        &[]
    };
    Storage::ALL
        .iter()
        .flat_map(|s| {
            let storage: PipelineConstants = s
                .pipeline_constants()
                .iter()
                .map(|&(k, v)| (k.to_string(), v))
                .collect();
            let mut all = vec![(format!("{s} storage"), storage.clone())];
            for &b in seqs {
                let mut constants = storage.clone();
                constants.insert("SEQS".to_string(), f64::from(b));
                all.push((format!("{s} storage, SEQS = {b}"), constants));
            }
            // The time loops' lanes per unit, with the workgroup size that goes with each
            // on a 1024-invocation adapter, alone and with 4 sequences per workgroup.
            if source.contains("override LANES") {
                for &l in &tpri::gpu::LANES_PER_UNIT[1..] {
                    for b in [1, 4] {
                        let mut constants = storage.clone();
                        constants.insert("SEQS".to_string(), f64::from(b));
                        constants.insert("LANES".to_string(), f64::from(l));
                        constants.insert("WG".to_string(), f64::from((256 * l).min(1024)));
                        all.push((format!("{s} storage, SEQS = {b}, LANES = {l}"), constants));
                    }
                }
            }
            all
        })
        .collect()
}

#[test]
fn history_kernels_include_the_history_storage() {
    // The files whose pipelines `gpu::kernel::HistoryKernels` builds once per storage.
    let history = [
        "bptt.wgsl",
        "forward.wgsl",
        "head.wgsl",
        "matmul.wgsl",
        "sum_sq.wgsl",
        "sweep_bptt.wgsl",
        "target_sweep.wgsl",
    ];
    for (name, source) in shader_files() {
        assert_eq!(
            uses_history(&source),
            history.contains(&name.as_str()),
            "{name}: which kernels take include/history.wgsl"
        );
        assert!(
            !source.contains("pack2x16float"),
            "{name}: pack2x16float needs a capability some adapters lack"
        );
    }
}

#[test]
fn shaders_validate_and_translate_to_every_backend() {
    for (file, source) in tpri::gpu::SHADERS {
        let (module, info) = validate(file, source, Capabilities::empty());
        assert!(!module.entry_points.is_empty(), "{file}: no entry point");
        for (variant, constants) in variants(source) {
            let name = format!("{file} ({variant})");
            let (module, info) = process_overrides(&module, &info, None, &constants)
                .unwrap_or_else(|e| panic!("{name}: overrides: {e}"));
            translate(&name, &module, &info, false);
        }
    }
}

/// The native f16 variants, as f16 storage compiles them (`HIST_F16` on), for Vulkan,
/// Metal and DX12 (shader model 6.2, the first with 16-bit types). wgpu's GL backend
/// never offers `SHADER_F16`, so GLSL is not asked for.
#[test]
fn native_f16_variants_validate_and_translate() {
    let f16 = Storage::F16
        .pipeline_constants()
        .iter()
        .map(|&(k, v)| (k.to_string(), v))
        .collect();
    for (file, source) in tpri::gpu::NATIVE_F16_SHADERS {
        let name = format!("{file} (native f16)");
        // Without the capability the `f16` type must be refused: the variant really uses it.
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
        assert!(
            Validator::new(ValidationFlags::all(), Capabilities::empty())
                .validate(&module)
                .is_err(),
            "{name}: validates without SHADER_FLOAT16"
        );
        let (module, info) = validate(&name, source, Capabilities::SHADER_FLOAT16);
        let (module, info) = process_overrides(&module, &info, None, &f16)
            .unwrap_or_else(|e| panic!("{name}: overrides: {e}"));
        translate(&name, &module, &info, true);
    }
}

/// Writes `module` in every backend language; `native_f16` modules use 16-bit floats,
/// which HLSL has from shader model 6.2 on and wgpu's GLSL output does not get.
fn translate(name: &str, module: &naga::Module, info: &ModuleInfo, native_f16: bool) {
    spv::write_vec(module, info, &spv::Options::default(), None)
        .unwrap_or_else(|e| panic!("{name}: SPIR-V: {e}"));

    let msl_options = msl::Options {
        lang_version: (2, 1),
        ..Default::default()
    };
    msl::write_string(module, info, &msl_options, &msl::PipelineOptions::default())
        .unwrap_or_else(|e| panic!("{name}: MSL: {e}"));

    let hlsl_options = hlsl::Options {
        shader_model: if native_f16 {
            hlsl::ShaderModel::V6_2
        } else {
            hlsl::ShaderModel::V5_1
        },
        ..Default::default()
    };
    let hlsl_pipeline = hlsl::PipelineOptions::default();
    let mut out = String::new();
    hlsl::Writer::new(&mut out, &hlsl_options, &hlsl_pipeline)
        .write(module, info, None)
        .unwrap_or_else(|e| panic!("{name}: HLSL: {e}"));

    if native_f16 {
        return;
    }
    // GLSL is written one entry point at a time; ES 3.1 is the first with compute.
    for ep in &module.entry_points {
        let options = glsl::Options {
            version: glsl::Version::new_gles(310),
            ..Default::default()
        };
        let pipeline = glsl::PipelineOptions {
            shader_stage: ep.stage,
            entry_point: ep.name.clone(),
            multiview: None,
        };
        let mut out = String::new();
        glsl::Writer::new(
            &mut out,
            module,
            info,
            &options,
            &pipeline,
            naga::proc::BoundsCheckPolicies::default(),
        )
        .and_then(|mut w| w.write())
        .unwrap_or_else(|e| panic!("{name}: GLSL ({}): {e}", ep.name));
    }
}
