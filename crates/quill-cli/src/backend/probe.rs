//! What each compiled-in backend can see: CPU threads, WGPU adapters, CUDA devices.
//! Probing never panics: a missing driver or library is reported as "none found", with
//! what to install. Only devices quill can run on are listed.

use serde::Serialize;

/// One device a backend can run on.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    /// What `--device` calls it (e.g. `cpu`, `wgpu:cpu`, `cuda:0`).
    pub device: String,
    /// A human description.
    pub name: String,
    /// The `--dtype` values it accepts.
    pub dtypes: Vec<&'static str>,
}

/// The backends compiled into this binary and the devices each sees.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// Backend names, in `--device auto`'s order of preference.
    pub compiled: Vec<&'static str>,
    /// Devices found, by backend.
    pub devices: Vec<(String, Vec<DeviceInfo>)>,
    /// Why a compiled-in backend found nothing, by backend.
    pub notes: Vec<(String, String)>,
}

/// Lists every compiled-in backend's devices.
pub fn inventory() -> Inventory {
    let mut inv = Inventory {
        compiled: Vec::new(),
        devices: Vec::new(),
        notes: Vec::new(),
    };
    #[cfg(feature = "cuda")]
    {
        inv.compiled.push("cuda");
        match cuda::devices() {
            Ok(devices) if !devices.is_empty() => inv.devices.push(("cuda".into(), devices)),
            Ok(_) => inv
                .notes
                .push(("cuda".into(), "the driver sees no device".into())),
            Err(why) => inv.notes.push(("cuda".into(), why)),
        }
    }
    #[cfg(feature = "wgpu")]
    {
        inv.compiled.push("wgpu");
        let adapters = wgpu::adapters();
        if adapters.is_empty() {
            inv.notes.push(("wgpu".into(), wgpu::NO_ADAPTER.into()));
        } else {
            inv.devices.push(("wgpu".into(), adapters));
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (name, on, dtypes) in [
        ("flex", cfg!(feature = "flex"), vec!["f32", "bf16", "f16"]),
        ("ndarray", cfg!(feature = "ndarray"), vec!["f32"]),
    ] {
        if on {
            inv.compiled.push(name);
            let info = DeviceInfo {
                device: name.into(),
                name: format!("CPU, {threads} threads"),
                dtypes,
            };
            inv.devices.push((name.into(), vec![info]));
        }
    }
    inv
}

/// Runs `probe` behind the panic boundary, the error as a `String` (driver libraries
/// that are missing make some probes panic).
#[allow(dead_code)]
fn quietly<T>(probe: impl FnOnce() -> T) -> Result<T, String> {
    crate::panics::catch("the probe failed", || Ok(probe())).map_err(|e| e.to_string())
}

#[cfg(feature = "cuda")]
pub mod cuda {
    //! CUDA devices, through the driver API (loaded at run time).

    use super::{DeviceInfo, quietly};
    use cudarc::driver::result;

    /// The devices the CUDA driver sees, or why there are none.
    pub fn devices() -> Result<Vec<DeviceInfo>, String> {
        let listed = quietly(|| -> Result<Vec<DeviceInfo>, String> {
            result::init().map_err(|e| format!("the CUDA driver failed to start: {e:?}"))?;
            let count = result::device::get_count().map_err(|e| format!("{e:?}"))?;
            (0..count)
                .map(|i| {
                    let dev = result::device::get(i).map_err(|e| format!("{e:?}"))?;
                    let name = result::device::get_name(dev).map_err(|e| format!("{e:?}"))?;
                    Ok(DeviceInfo {
                        device: format!("cuda:{i}"),
                        name,
                        dtypes: vec!["f32", "bf16", "f16"],
                    })
                })
                .collect()
        });
        match listed {
            Ok(devices) => devices,
            Err(_) => Err("no CUDA driver found (libcuda could not be loaded)".into()),
        }
    }

    /// Device `n`'s memory in bytes, or `None` when the driver cannot say.
    pub fn total_memory(n: usize) -> Option<usize> {
        quietly(|| {
            result::init().ok()?;
            let dev = result::device::get(i32::try_from(n).ok()?).ok()?;
            // SAFETY: `dev` is a device handle the driver just returned.
            unsafe { result::device::total_mem(dev) }.ok()
        })
        .ok()
        .flatten()
    }
}

#[cfg(feature = "wgpu")]
pub mod wgpu {
    //! WGPU adapters, as wgpu enumerates them.

    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use ::wgpu::{Backends, DeviceType, Features, Instance, InstanceDescriptor};

    use super::{DeviceInfo, quietly};

    fn block_on<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::yield_now();
        }
    }

    /// One adapter: its device type and whether it has 16-bit float shaders.
    #[derive(Debug, Clone)]
    pub struct Adapter {
        /// The adapter's name, driver and API.
        pub name: String,
        /// Discrete, integrated, virtual, CPU or other.
        pub device_type: DeviceType,
        /// `SHADER_F16`: `--dtype f16` works.
        pub f16: bool,
    }

    /// The graphics API CubeCL's WGPU runtime (so quill) runs on: Metal on macOS,
    /// Vulkan elsewhere (as `cubecl_wgpu::AutoGraphicsApi` picks it).
    pub const API: &str = if cfg!(target_os = "macos") {
        "Metal"
    } else {
        "Vulkan"
    };

    fn api() -> Backends {
        if cfg!(target_os = "macos") {
            Backends::METAL
        } else {
            Backends::VULKAN
        }
    }

    /// Keeps Mesa's Vulkan device-select layer from printing `error: XDG_RUNTIME_DIR is
    /// invalid or not set` on machines without a desktop login (servers, CI, root
    /// shells): the layer looks for a Wayland display to order the GPUs, and there is
    /// none to find. Where `XDG_RUNTIME_DIR` is set, nothing changes.
    pub fn quiet_headless_vulkan() {
        if std::env::var_os("XDG_RUNTIME_DIR").is_none()
            && std::env::var_os("NODEVICE_SELECT").is_none()
        {
            // SAFETY: called first thing in `main`, before any other thread exists.
            unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
        }
    }

    /// The error for a machine without a usable adapter.
    pub const NO_ADAPTER: &str = if cfg!(target_os = "macos") {
        "no Metal adapter found, or use --device cpu"
    } else {
        "no Vulkan adapter found (on Linux: apt-get install mesa-vulkan-drivers), or use --device cpu"
    };

    /// The adapters quill can run on: those of [`API`]. Adapters of other APIs (an
    /// OpenGL llvmpipe, say) are not listed: CubeCL cannot use them.
    pub fn usable_adapters() -> Vec<Adapter> {
        enumerate(api())
    }

    fn enumerate(backends: Backends) -> Vec<Adapter> {
        quietly(|| {
            let instance = Instance::new(InstanceDescriptor::new_without_display_handle());
            block_on(instance.enumerate_adapters(backends))
                .into_iter()
                .map(|a| {
                    let info = a.get_info();
                    Adapter {
                        name: format!("{} ({}, {:?})", info.name, info.driver, info.backend),
                        device_type: info.device_type,
                        f16: a.features().contains(Features::SHADER_F16),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// The usable adapters as `--device` names them: `wgpu:cpu` for a software adapter,
    /// `wgpu:N` for discrete GPU N, `wgpu` for others (the default device).
    pub fn adapters() -> Vec<DeviceInfo> {
        let mut discrete = 0;
        usable_adapters()
            .into_iter()
            .map(|a| {
                let device = match a.device_type {
                    DeviceType::Cpu => "wgpu:cpu".to_string(),
                    DeviceType::DiscreteGpu => {
                        discrete += 1;
                        format!("wgpu:{}", discrete - 1)
                    }
                    _ => "wgpu".to_string(),
                };
                let mut dtypes = vec!["f32"];
                if a.f16 {
                    dtypes.push("f16");
                }
                DeviceInfo {
                    device,
                    name: format!("{} [{:?}]", a.name, a.device_type),
                    dtypes,
                }
            })
            .collect()
    }
}
