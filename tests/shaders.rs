//! Every WGSL file in `shaders/` parses, validates, and translates to SPIR-V, MSL, HLSL and
//! GLSL — the languages wgpu hands to Vulkan, Metal, DX12 and GL drivers — in each variant
//! the backend compiles (the `HIST_F16` override of the history kernels set for f32 and
//! for f16 storage). No GPU needed.

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

/// `shaders/include/history.wgsl` from disk.
fn history_include() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders/include/history.wgsl");
    std::fs::read_to_string(path).expect("readable include")
}

/// Whether a kernel file relies on the history include (it says so in a comment).
fn uses_history(source: &str) -> bool {
    source.contains("include/history.wgsl")
}

fn validate(name: &str, source: &str) -> (naga::Module, ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    // The kernels use only core WGSL: no optional capability is granted (in particular
    // not SHADER_FLOAT16_IN_FLOAT32, which pack2x16float would need).
    let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
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
    assert_eq!(tpri::gpu::HISTORY_WGSL, history_include(), "stale include");
    for (name, source) in shader_files() {
        let embedded = tpri::gpu::SHADERS.iter().find(|(n, _)| *n == name).unwrap();
        let expected = if uses_history(&source) {
            format!("{source}\n{}", history_include())
        } else {
            source
        };
        assert_eq!(embedded.1, expected, "{name}: embedded copy is stale");
    }
}

#[test]
fn max_hidden_agrees_with_the_host() {
    let line = format!("const MAX_HIDDEN: u32 = {}u;", tpri::gpu::MAX_HIDDEN);
    for (name, source) in shader_files() {
        if source.contains("MAX_HIDDEN") {
            assert!(source.contains(&line), "{name} must declare `{line}`");
        }
    }
}

/// The pipeline constants a compiled source is built with: one variant per storage
/// where it has the `HIST_F16` override (`Storage::pipeline_constants`), else none.
fn variants(source: &str) -> Vec<(String, PipelineConstants)> {
    if !source.contains("override HIST_F16") {
        return vec![("no overrides".into(), PipelineConstants::default())];
    }
    Storage::ALL
        .iter()
        .map(|s| {
            let constants = s
                .pipeline_constants()
                .iter()
                .map(|&(k, v)| (k.to_string(), v))
                .collect();
            (format!("{s} storage"), constants)
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
        let (module, info) = validate(file, source);
        assert!(!module.entry_points.is_empty(), "{file}: no entry point");
        for (variant, constants) in variants(source) {
            let name = format!("{file} ({variant})");
            let (module, info) = process_overrides(&module, &info, None, &constants)
                .unwrap_or_else(|e| panic!("{name}: overrides: {e}"));
            translate(&name, &module, &info);
        }
    }
}

/// Writes `module` in every backend language.
fn translate(name: &str, module: &naga::Module, info: &ModuleInfo) {
    spv::write_vec(module, info, &spv::Options::default(), None)
        .unwrap_or_else(|e| panic!("{name}: SPIR-V: {e}"));

    let msl_options = msl::Options {
        lang_version: (2, 1),
        ..Default::default()
    };
    msl::write_string(module, info, &msl_options, &msl::PipelineOptions::default())
        .unwrap_or_else(|e| panic!("{name}: MSL: {e}"));

    let hlsl_options = hlsl::Options {
        shader_model: hlsl::ShaderModel::V5_1,
        ..Default::default()
    };
    let hlsl_pipeline = hlsl::PipelineOptions::default();
    let mut out = String::new();
    hlsl::Writer::new(&mut out, &hlsl_options, &hlsl_pipeline)
        .write(module, info, None)
        .unwrap_or_else(|e| panic!("{name}: HLSL: {e}"));

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
