//! Where the GPU backends keep what they learn between runs.
//!
//! Burn's WGPU and CUDA backends run on CubeCL, which compiles every kernel on first use
//! (NVRTC on CUDA: ~0.5 s a kernel) and autotunes the matmul and reduction kernels. By
//! default it keeps no compiled kernels and puts its autotune results in the `target/`
//! directory of the nearest `Cargo.toml` — nowhere useful for an installed binary. quill
//! sets both caches to one directory that survives between runs:
//!
//! - `$QUILL_CACHE_DIR` if set, else `$XDG_CACHE_HOME/quill/cubecl`, else
//!   `~/.cache/quill/cubecl` (`%LOCALAPPDATA%\quill\cubecl` on Windows,
//!   `~/Library/Caches/quill/cubecl` on macOS);
//! - `compilation/`: compiled kernels (PTX on CUDA), keyed by kernel;
//! - `autotune/`: the fastest kernel per shape.
//!
//! Autotuning is bounded to CubeCL's `minimal` level unless `CUBECL_AUTOTUNE_LEVEL` says
//! otherwise (`minimal`, `balanced`, `extensive`, `full`). A `cubecl.toml` in the working
//! directory still applies; quill only fills in the cache locations it leaves unset.

use std::path::PathBuf;
use std::sync::OnceLock;

use cubecl_runtime::config::cache::CacheConfig;
use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig, autotune::AutotuneLevel};

/// quill's CubeCL cache directory (see the module docs).
pub fn dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env("QUILL_CACHE_DIR") {
        return dir;
    }
    let base = if cfg!(windows) {
        env("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        env("HOME").map(|h| h.join("Library/Caches"))
    } else {
        env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache")))
    };
    base.unwrap_or_else(std::env::temp_dir)
        .join("quill")
        .join("cubecl")
}

/// Sets CubeCL's configuration once, before the first kernel; returns the cache directory.
pub fn configure() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = dir();
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        if config.compilation.cache.is_none() {
            config.compilation.cache = Some(CacheConfig::File(dir.join("compilation")));
        }
        if matches!(config.autotune.cache, CacheConfig::Target) {
            config.autotune.cache = CacheConfig::File(dir.join("autotune"));
        }
        if std::env::var_os("CUBECL_AUTOTUNE_LEVEL").is_none() {
            config.autotune.level = AutotuneLevel::Minimal;
        }
        CubeClRuntimeConfig::set(config);
        dir
    })
}
