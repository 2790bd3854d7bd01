//! Backend selection: the only place that names concrete Burn backends.

use std::str::FromStr;

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;

/// What `--device` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The best device compiled in and present.
    Auto,
    /// The default CPU backend.
    Cpu,
    /// The Flex CPU backend.
    Flex,
    /// The NdArray CPU backend.
    NdArray,
    /// A WGPU adapter.
    Wgpu,
    /// CUDA device N.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => DeviceChoice::Auto,
            "cpu" => DeviceChoice::Cpu,
            "flex" => DeviceChoice::Flex,
            "ndarray" => DeviceChoice::NdArray,
            "wgpu" => DeviceChoice::Wgpu,
            "cuda" => DeviceChoice::Cuda(0),
            other => match other.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => DeviceChoice::Cuda(n),
                _ => {
                    return Err(format!(
                        "unknown device {other:?}; use auto, cpu, flex, ndarray, wgpu, cuda or cuda:N"
                    ));
                }
            },
        })
    }
}

/// Work that runs on whichever backend the user picked.
pub trait Job {
    /// What the work returns.
    type Output;
    /// Runs on backend `B` (with autodiff; inference uses `B::InnerBackend`).
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Self::Output>;
}

#[cfg(not(any(feature = "flex", feature = "ndarray")))]
compile_error!("quill needs a CPU backend: enable the `flex` or `ndarray` feature");

/// The backends compiled into this binary.
enum Compiled {
    #[cfg(feature = "flex")]
    Flex,
    #[cfg(feature = "ndarray")]
    NdArray,
}

/// The error for a backend that this binary was built without.
fn not_compiled(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the {name} backend is not compiled in; rebuild with `cargo build --release --features {name}`"
    )
}

/// Maps `--device` to a compiled-in backend. The default CPU backend is Flex: it is
/// deterministic run to run (NdArray's threaded reductions are not).
fn resolve(choice: DeviceChoice) -> Result<Compiled> {
    match choice {
        DeviceChoice::Wgpu => Err(not_compiled("wgpu")),
        DeviceChoice::Cuda(_) => Err(not_compiled("cuda")),
        #[cfg(feature = "flex")]
        DeviceChoice::Auto | DeviceChoice::Cpu | DeviceChoice::Flex => Ok(Compiled::Flex),
        #[cfg(not(feature = "flex"))]
        DeviceChoice::Flex => Err(not_compiled("flex")),
        #[cfg(feature = "ndarray")]
        DeviceChoice::NdArray => Ok(Compiled::NdArray),
        #[cfg(all(feature = "ndarray", not(feature = "flex")))]
        DeviceChoice::Auto | DeviceChoice::Cpu => Ok(Compiled::NdArray),
        #[cfg(not(feature = "ndarray"))]
        DeviceChoice::NdArray => Err(not_compiled("ndarray")),
    }
}

/// Resolves `choice` to a compiled-in backend, says which on stderr, and runs `job` there.
pub fn run<J: Job>(choice: DeviceChoice, job: J) -> Result<J::Output> {
    match resolve(choice)? {
        #[cfg(feature = "flex")]
        Compiled::Flex => {
            eprintln!("device: cpu (flex backend)");
            job.run::<burn_autodiff::Autodiff<burn_flex::Flex>>(burn_flex::FlexDevice)
        }
        #[cfg(feature = "ndarray")]
        Compiled::NdArray => {
            eprintln!("device: cpu (ndarray backend)");
            job.run::<burn_autodiff::Autodiff<burn_ndarray::NdArray>>(
                burn_ndarray::NdArrayDevice::Cpu,
            )
        }
    }
}
