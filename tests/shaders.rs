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

/// Whether a kernel file relies on the history include (it says so in a comment).
fn uses_history(source: &str) -> bool {
    source.contains("include/history.wgsl")
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
    let (history, bits, native) = (
        include("history.wgsl"),
        include("f16_bits.wgsl"),
        include("f16_native.wgsl"),
    );
    assert_eq!(tpri::gpu::HISTORY_WGSL, history, "stale include");
    assert_eq!(tpri::gpu::F16_BITS_WGSL, bits, "stale include");
    assert_eq!(tpri::gpu::F16_NATIVE_WGSL, native, "stale include");
    for (name, source) in shader_files() {
        let embedded = tpri::gpu::SHADERS.iter().find(|(n, _)| *n == name).unwrap();
        let native_variant = tpri::gpu::NATIVE_F16_SHADERS
            .iter()
            .find(|(n, _)| *n == name);
        if uses_history(&source) {
            assert_eq!(
                embedded.1,
                format!("{source}\n{history}\n{bits}"),
                "{name}: embedded copy is stale"
            );
            let native_variant = native_variant
                .unwrap_or_else(|| panic!("{name}: no native f16 variant"))
                .1;
            assert_eq!(
                native_variant,
                format!("enable f16;\n{source}\n{history}\n{native}"),
                "{name}: embedded native f16 copy is stale"
            );
        } else {
            assert_eq!(embedded.1, source, "{name}: embedded copy is stale");
            assert!(native_variant.is_none(), "{name}: touches no history");
        }
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
/// where it has the `HIST_F16` override (`Storage::pipeline_constants`), one per
/// workgroup size where it has the `WG` override (jacobian.wgsl), else none.
fn variants(source: &str) -> Vec<(String, PipelineConstants)> {
    if source.contains("override WG") {
        return tpri::gpu::JACOBIAN_WORKGROUP_SIZES
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
