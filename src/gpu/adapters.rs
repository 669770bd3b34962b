//! Finding the GPU: adapter discovery (`tpri devices`), and the choice of one by rank,
//! index or name (`--device`).

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context as _, Result};

/// Which adapter to run on (`--device` on the command line).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum AdapterChoice {
    /// The best compute-capable adapter: discrete, then integrated, virtual, other, CPU;
    /// among equals, Vulkan/Metal/DX12 before GL.
    #[default]
    Auto,
    /// The adapter at this position in `list_adapters()`.
    Index(usize),
    /// The first adapter whose name contains this text (case-insensitive).
    Name(String),
}

/// The refusal of an empty (or blank) adapter name, which every adapter's name contains.
fn empty_name() -> crate::error::Error {
    crate::error::Error::setting(
        "AdapterChoice::Name",
        "an empty adapter name would match every adapter: give auto, an index from \
         list_adapters() or part of an adapter's name",
    )
}

impl FromStr for AdapterChoice {
    type Err = crate::error::Error;

    /// `auto`, an index, or a name substring (not empty).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(empty_name());
        }
        Ok(if s.eq_ignore_ascii_case("auto") {
            Self::Auto
        } else if let Ok(i) = s.parse() {
            Self::Index(i)
        } else {
            Self::Name(s.to_owned())
        })
    }
}

/// What `tpri devices` prints about one adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Position in the listing (what `AdapterChoice::Index` refers to).
    pub index: usize,
    /// The adapter's name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub name: String,
    /// Vulkan, Metal, Dx12, Gl, …
    pub backend: String,
    /// DiscreteGpu, IntegratedGpu, Cpu, …
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Whether compute shaders run on it at all (GL adapters may lack them).
    pub compute: bool,
    /// Largest buffer, bytes.
    pub max_buffer_size: u64,
    /// Largest storage buffer one binding can see, bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest workgroup along x.
    pub max_workgroup_size_x: u32,
    /// Most invocations in one workgroup.
    pub max_invocations_per_workgroup: u32,
    /// Bytes of workgroup memory available to one workgroup.
    pub workgroup_storage_size: u32,
    /// Whether GPU timestamps can be written from compute passes.
    pub timestamp_query: bool,
    /// Whether shaders can use the `f16` type (wgpu's `SHADER_F16`): f16 storage then
    /// converts natively.
    pub shader_f16: bool,
    /// Subgroup sizes (least, most) where shaders can use subgroup operations (wgpu's
    /// `SUBGROUP`); `None` where they cannot.
    pub subgroups: Option<(u32, u32)>,
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "[{}] {} ({}, {}){}",
            self.index,
            self.name,
            self.backend,
            self.device_type,
            if self.compute {
                ""
            } else {
                " — no compute shaders"
            }
        )?;
        writeln!(f, "    driver: {}", self.driver)?;
        writeln!(
            f,
            "    max buffer {} B, max storage binding {} B",
            self.max_buffer_size, self.max_storage_buffer_binding_size
        )?;
        write!(
            f,
            "    workgroup: size x ≤ {}, ≤ {} invocations, {} B shared; timestamps: {}; shader f16: {}; subgroups: {}",
            self.max_workgroup_size_x,
            self.max_invocations_per_workgroup,
            self.workgroup_storage_size,
            if self.timestamp_query { "yes" } else { "no" },
            if self.shader_f16 { "yes" } else { "no" },
            match self.subgroups {
                Some((least, most)) if least == most => format!("{least} invocations"),
                Some((least, most)) => format!("{least}–{most} invocations"),
                None => "no".to_string(),
            }
        )
    }
}

const NO_ADAPTER_HINT: &str = "no GPU adapter found: wgpu saw no Vulkan, Metal or DX12 device. \
     Install a driver (on Debian/Ubuntu without a GPU, the software Vulkan driver: \
     `apt-get install mesa-vulkan-drivers`), or use the CPU backend";

/// Vulkan, Metal and DX12 unless `WGPU_BACKEND` says otherwise: wgpu's GL backend lacks
/// much of compute and, without a display, fills stderr with EGL complaints.
fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::PRIMARY;
    wgpu::Instance::new(desc.with_env())
}

fn enumerate() -> Vec<wgpu::Adapter> {
    quiet_display_probe(|| pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all())))
}

/// Runs `f`, which creates a Vulkan instance and enumerates its devices, without the
/// "error: XDG_RUNTIME_DIR is invalid or not set in the environment." lines libwayland
/// prints when `XDG_RUNTIME_DIR` is unset (headless machines, CI, containers).
///
/// Where they come from: wgpu enables every window-system extension the driver offers on
/// each Vulkan instance (`VK_KHR_wayland_surface` among them; wgpu 30 has no option to
/// leave them out of a compute-only instance), and Mesa's device-selection layer
/// (`VK_LAYER_MESA_device_select`, installed with Mesa's Vulkan drivers, lavapipe's
/// included) then asks the Wayland compositor which GPU it runs on whenever devices are
/// enumerated. Without `XDG_RUNTIME_DIR` there is no compositor to ask and the question
/// fails anyway, but libwayland says so on stderr first.
///
/// So while `f` runs, an unset `XDG_RUNTIME_DIR` points at a fresh, empty directory only
/// this user can enter (mode 0700): the layer's connection then fails quietly (no socket
/// there), exactly as it would have failed loudly. Afterwards the variable is unset again
/// and the directory removed, so the process environment is as it was. A variable that is
/// set, to anything, is left alone. The change happens under a lock that every enumeration
/// of this crate takes; code of the embedding program reading the environment from
/// another thread at that moment sees the temporary value.
fn quiet_display_probe<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(all(
        unix,
        not(any(target_os = "macos", target_os = "ios", target_os = "android"))
    ))]
    {
        use std::os::unix::fs::DirBuilderExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Mutex;

        static LOCK: Mutex<()> = Mutex::new(());
        static COUNT: AtomicU64 = AtomicU64::new(0);
        const VAR: &str = "XDG_RUNTIME_DIR";

        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if std::env::var_os(VAR).is_none() {
            let dir = std::env::temp_dir().join(format!(
                "tpri-runtime-{}-{}",
                std::process::id(),
                COUNT.fetch_add(1, Ordering::Relaxed)
            ));
            // `create`, not `create_all`: the directory must be new, so nobody else's
            // socket can be in it. Where it cannot be made, the lines are printed.
            if std::fs::DirBuilder::new().mode(0o700).create(&dir).is_ok() {
                /// Unsets the variable and removes the directory, even if `f` panics.
                struct Restore(std::path::PathBuf);
                impl Drop for Restore {
                    fn drop(&mut self) {
                        std::env::remove_var(VAR);
                        let _ = std::fs::remove_dir(&self.0);
                    }
                }
                std::env::set_var(VAR, &dir);
                let _restore = Restore(dir);
                return f();
            }
        }
        f()
    }
    #[cfg(not(all(
        unix,
        not(any(target_os = "macos", target_os = "ios", target_os = "android"))
    )))]
    f()
}

fn summarize(index: usize, adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let limits = adapter.limits();
    let driver = [info.driver.as_str(), info.driver_info.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    AdapterSummary {
        index,
        name: info.name,
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver,
        compute: adapter
            .get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS),
        max_buffer_size: limits.max_buffer_size,
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_workgroup_size_x: limits.max_compute_workgroup_size_x,
        max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        timestamp_query: adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY),
        shader_f16: adapter.features().contains(wgpu::Features::SHADER_F16),
        subgroups: adapter
            .features()
            .contains(wgpu::Features::SUBGROUP)
            .then_some((info.subgroup_min_size, info.subgroup_max_size)),
    }
}

/// Every adapter wgpu can see on this machine, in the order `AdapterChoice::Index` uses.
pub fn list_adapters() -> Vec<AdapterSummary> {
    enumerate()
        .iter()
        .enumerate()
        .map(|(i, a)| summarize(i, a))
        .collect()
}

/// Preference of `AdapterChoice::Auto`: lower is better.
fn rank(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

pub(crate) fn choose(choice: &AdapterChoice) -> Result<wgpu::Adapter> {
    let adapters = enumerate();
    if adapters.is_empty() {
        bail!(NO_ADAPTER_HINT);
    }
    let names = || {
        adapters
            .iter()
            .enumerate()
            .map(|(i, a)| format!("[{i}] {}", a.get_info().name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let computes = |a: &wgpu::Adapter| {
        a.get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
    };
    let picked = match choice {
        AdapterChoice::Auto => adapters
            .iter()
            .filter(|a| computes(a))
            // GL last among equals: its compute support is the weakest.
            .min_by_key(|a| {
                let info = a.get_info();
                (rank(info.device_type), info.backend == wgpu::Backend::Gl)
            })
            .with_context(|| {
                format!(
                    "{NO_ADAPTER_HINT} (adapters without compute shaders: {})",
                    names()
                )
            })?,
        AdapterChoice::Index(i) => adapters
            .get(*i)
            .with_context(|| format!("no adapter with index {i}; adapters: {}", names()))?,
        AdapterChoice::Name(part) if part.trim().is_empty() => return Err(empty_name().into()),
        AdapterChoice::Name(part) => {
            let part_lc = part.to_lowercase();
            adapters
                .iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&part_lc))
                .with_context(|| format!("no adapter named like {part:?}; adapters: {}", names()))?
        }
    };
    if !computes(picked) {
        bail!(
            "adapter {} cannot run compute shaders; adapters: {}",
            picked.get_info().name,
            names()
        );
    }
    Ok(picked.clone())
}
