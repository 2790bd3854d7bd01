//! Backend selection: the only place that names concrete Burn backends.
//!
//! `--device` picks a backend and device ([`DeviceChoice`]), `--dtype` its float type
//! ([`DType`]); [`prepare`] resolves both against what this binary was compiled with and
//! the devices present, starts the device, and says what it picked — before any data is
//! loaded — and [`Prepared::run`] runs a [`Job`] there. Both sit behind the panic
//! boundary ([`crate::panics`]): a panic while a device starts or works is an error.
//!
//! Dispatch is static: a [`Job`] is generic over the backend and [`Prepared::run`]
//! monomorphises it once per compiled-in backend, rather than boxing a `dyn` backend.
//! Burn's backends are types, not values, and the fused CPU kernels recognise the Flex
//! backend by its type (`quill-kernels`), so the concrete type must reach the model.
//!
//! - [`probe`]: what each compiled-in backend can see (CPU threads, WGPU adapters,
//!   CUDA devices), without panicking.
//! - `cubecl_cache`: where the GPU backends keep compiled kernels and autotune results.

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cubecl_cache;
pub mod probe;

use std::fmt;
use std::str::FromStr;

use anyhow::Result;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
use anyhow::bail;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use crate::panics;

#[cfg(feature = "wgpu")]
use crate::backend::probe::wgpu::usable_adapters;

/// What `--device` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA if compiled in and a GPU is present, else a hardware WGPU adapter, else CPU.
    Auto,
    /// The default CPU backend.
    Cpu,
    /// The Flex CPU backend.
    Flex,
    /// The NdArray CPU backend.
    NdArray,
    /// A WGPU adapter.
    Wgpu(WgpuChoice),
    /// CUDA device N.
    Cuda(usize),
}

/// Which WGPU adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgpuChoice {
    /// wgpu's default (a high-power GPU first; `CUBECL_WGPU_DEFAULT_DEVICE` overrides).
    Default,
    /// The software (CPU) adapter, e.g. Mesa's lavapipe.
    Cpu,
    /// Discrete GPU N.
    Discrete(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let index = |prefix: &str| s.strip_prefix(prefix)?.parse::<usize>().ok();
        Ok(match s {
            "auto" => DeviceChoice::Auto,
            "cpu" => DeviceChoice::Cpu,
            "flex" => DeviceChoice::Flex,
            "ndarray" => DeviceChoice::NdArray,
            "wgpu" => DeviceChoice::Wgpu(WgpuChoice::Default),
            "wgpu:cpu" => DeviceChoice::Wgpu(WgpuChoice::Cpu),
            "cuda" => DeviceChoice::Cuda(0),
            other => match (index("cuda:"), index("wgpu:")) {
                (Some(n), _) => DeviceChoice::Cuda(n),
                (_, Some(n)) => DeviceChoice::Wgpu(WgpuChoice::Discrete(n)),
                _ => {
                    return Err(format!(
                        "unknown device {other:?}; use auto, cpu, flex, ndarray, wgpu, wgpu:cpu, wgpu:N, cuda or cuda:N"
                    ));
                }
            },
        })
    }
}

/// What `--dtype` asks for: the float type of parameters and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DType {
    /// 32-bit float (every backend).
    #[default]
    F32,
    /// bfloat16 (CUDA, the Flex CPU backend).
    Bf16,
    /// IEEE half (CUDA, the Flex CPU backend; WGPU where the adapter has 16-bit float
    /// shaders).
    F16,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
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

/// A backend compiled into this binary, with its device.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    #[cfg(feature = "flex")]
    Flex,
    #[cfg(feature = "ndarray")]
    NdArray,
    #[cfg(feature = "wgpu")]
    Wgpu(burn_wgpu::WgpuDevice),
    #[cfg(feature = "cuda")]
    Cuda(usize),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "flex")]
            Target::Flex => f.write_str("cpu (flex backend)"),
            #[cfg(feature = "ndarray")]
            Target::NdArray => f.write_str("cpu (ndarray backend)"),
            #[cfg(feature = "wgpu")]
            Target::Wgpu(device) => write!(f, "wgpu ({device:?})"),
            #[cfg(feature = "cuda")]
            Target::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Target {
    /// WGPU or CUDA: a CubeCL backend, which compiles and autotunes kernels.
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    fn is_gpu(&self) -> bool {
        match self {
            #[cfg(feature = "wgpu")]
            Target::Wgpu(_) => true,
            #[cfg(feature = "cuda")]
            Target::Cuda(_) => true,
            _ => false,
        }
    }
}

/// The error for a backend that this binary was built without.
#[cfg(not(all(
    feature = "flex",
    feature = "ndarray",
    feature = "wgpu",
    feature = "cuda"
)))]
fn not_compiled(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the {name} backend is not compiled in; install a quill that has it: `cargo install --path crates/quill-cli --features {name}` (from a checkout)"
    )
}

/// The default CPU backend: Flex, measured faster than NdArray here and deterministic
/// run to run (NdArray's threaded reductions are not).
fn default_cpu() -> Target {
    #[cfg(feature = "flex")]
    return Target::Flex;
    #[cfg(not(feature = "flex"))]
    Target::NdArray
}

/// Maps `--device` to a compiled-in backend and a device that is present.
fn resolve(choice: DeviceChoice) -> Result<Target> {
    match choice {
        DeviceChoice::Auto => Ok(auto()),
        DeviceChoice::Cpu => Ok(default_cpu()),
        #[cfg(feature = "flex")]
        DeviceChoice::Flex => Ok(Target::Flex),
        #[cfg(not(feature = "flex"))]
        DeviceChoice::Flex => Err(not_compiled("flex")),
        #[cfg(feature = "ndarray")]
        DeviceChoice::NdArray => Ok(Target::NdArray),
        #[cfg(not(feature = "ndarray"))]
        DeviceChoice::NdArray => Err(not_compiled("ndarray")),
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu(which) => wgpu_device(which).map(Target::Wgpu),
        #[cfg(not(feature = "wgpu"))]
        DeviceChoice::Wgpu(_) => Err(not_compiled("wgpu")),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(n) => {
            let devices =
                crate::backend::probe::cuda::devices().map_err(|why| anyhow::anyhow!(why))?;
            if n >= devices.len() {
                bail!(
                    "no CUDA device {n}: the driver sees {} device(s)",
                    devices.len()
                );
            }
            Ok(Target::Cuda(n))
        }
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda(_) => Err(not_compiled("cuda")),
    }
}

/// `--device auto`: the lecture's "cuda, else mps, else cpu".
fn auto() -> Target {
    #[cfg(feature = "cuda")]
    if crate::backend::probe::cuda::devices().is_ok_and(|d| !d.is_empty()) {
        return Target::Cuda(0);
    }
    #[cfg(feature = "wgpu")]
    if usable_adapters()
        .iter()
        .any(|a| a.device_type != wgpu::DeviceType::Cpu)
    {
        return Target::Wgpu(burn_wgpu::WgpuDevice::DefaultDevice);
    }
    default_cpu()
}

#[cfg(feature = "wgpu")]
fn wgpu_device(which: WgpuChoice) -> Result<burn_wgpu::WgpuDevice> {
    use burn_wgpu::WgpuDevice;
    let adapters = usable_adapters();
    let count = |t: wgpu::DeviceType| adapters.iter().filter(|a| a.device_type == t).count();
    match which {
        WgpuChoice::Default if adapters.is_empty() => {
            bail!(crate::backend::probe::wgpu::NO_ADAPTER)
        }
        WgpuChoice::Default => Ok(WgpuDevice::DefaultDevice),
        WgpuChoice::Cpu if count(wgpu::DeviceType::Cpu) == 0 => bail!(
            "no software (CPU) {} adapter found (on Linux: apt-get install mesa-vulkan-drivers), or use --device cpu",
            crate::backend::probe::wgpu::API
        ),
        WgpuChoice::Cpu => Ok(WgpuDevice::Cpu),
        WgpuChoice::Discrete(n) if n >= count(wgpu::DeviceType::DiscreteGpu) => bail!(
            "no discrete GPU {n}: wgpu sees {}",
            count(wgpu::DeviceType::DiscreteGpu)
        ),
        WgpuChoice::Discrete(n) => Ok(WgpuDevice::DiscreteGpu(n)),
    }
}

/// Whether the WGPU adapter `device` has 16-bit float shaders.
#[cfg(feature = "wgpu")]
fn wgpu_has_f16(device: &burn_wgpu::WgpuDevice) -> bool {
    use burn_wgpu::WgpuDevice;
    let adapters = usable_adapters();
    let of_type = |t: wgpu::DeviceType| adapters.iter().filter(move |a| a.device_type == t);
    match device {
        WgpuDevice::Cpu => of_type(wgpu::DeviceType::Cpu).any(|a| a.f16),
        WgpuDevice::DiscreteGpu(n) => of_type(wgpu::DeviceType::DiscreteGpu)
            .nth(*n)
            .is_some_and(|a| a.f16),
        _ => adapters.iter().all(|a| a.f16),
    }
}

/// A backend and device that [`prepare`] resolved and started.
#[derive(Debug, Clone)]
pub struct Prepared {
    target: Target,
    dtype: DType,
}

/// Resolves `choice` and `dtype` to a compiled-in backend and a device that is present,
/// says which on stderr, and starts the device (a one-element tensor is made there), so
/// that a missing driver or an unsupported dtype fails here, before any slow work.
pub fn prepare(choice: DeviceChoice, dtype: DType) -> Result<Prepared> {
    let target = panics::catch("could not look for devices", || resolve(choice))?;
    // The one dtype check that needs the adapters: asked once, here, not per job.
    #[cfg(feature = "wgpu")]
    if let Target::Wgpu(device) = &target
        && dtype == DType::F16
        && !wgpu_has_f16(device)
    {
        return Err(unsupported(&target, dtype));
    }
    eprintln!("device: {target}, {dtype}");
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if target.is_gpu() {
        let dir = crate::backend::cubecl_cache::configure();
        eprintln!("kernel and autotune cache: {}", dir.display());
    }
    let prepared = Prepared { target, dtype };
    let context = format!("could not start {}", prepared.target);
    panics::catch(&context, || prepared.dispatch(Probe))?;
    Ok(prepared)
}

/// Makes one element on the device and reads it back: starts the device's runtime.
struct Probe;

impl Job for Probe {
    type Output = ();
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        // Reading it back waits for the device: its runtime has started and run a kernel.
        Tensor::<B::InnerBackend, 1>::zeros([1], &device).into_data();
        Ok(())
    }
}

/// Runs `work` on a worker thread of a rayon pool as large as the global one. Token by
/// token decoding calls the CPU kernels' parallel loops dozens of times a token; from a
/// thread outside the pool each call hands its work over and sleeps until the pool is
/// done, and the hand-offs cost more than a small model's arithmetic. From a worker,
/// the calling thread takes its share. The loops split their work by the pool's size,
/// the same as the global pool's, so the results are the same, bit for bit.
pub fn on_pool_worker<R: Send>(work: impl FnOnce() -> R + Send) -> Result<R> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(rayon::current_num_threads())
        .thread_name(|i| format!("decode-{i}"))
        .build()?;
    Ok(pool.install(work))
}

impl Prepared {
    /// Runs `job` on this backend and device; a panic inside it is an error.
    pub fn run<J: Job>(&self, job: J) -> Result<J::Output> {
        let context = format!("{} failed", self.target);
        panics::catch(&context, || self.dispatch(job))
    }

    /// Bytes per float of `--dtype`.
    pub fn dtype_bytes(&self) -> usize {
        match self.dtype {
            DType::F32 => 4,
            DType::Bf16 | DType::F16 => 2,
        }
    }

    /// The memory this device has and how to name it in an error (`the machine`,
    /// `cuda:0`), or `None` when it cannot be known (a hardware WGPU adapter).
    pub fn memory(&self) -> Option<(f64, String)> {
        let host = || host_memory().map(|bytes| (bytes, "the machine".to_string()));
        match &self.target {
            #[cfg(feature = "flex")]
            Target::Flex => host(),
            #[cfg(feature = "ndarray")]
            Target::NdArray => host(),
            #[cfg(feature = "wgpu")]
            Target::Wgpu(burn_wgpu::WgpuDevice::Cpu) => host(),
            #[cfg(feature = "wgpu")]
            Target::Wgpu(_) => None,
            #[cfg(feature = "cuda")]
            Target::Cuda(n) => crate::backend::probe::cuda::total_memory(*n)
                .map(|bytes| (bytes as f64, format!("cuda:{n}"))),
        }
    }

    /// Fails with one line when `estimate` exceeds the device's memory (see
    /// [`Prepared::memory`]).
    pub fn check_memory(&self, estimate: &quill_train::MemoryEstimate) -> Result<()> {
        if let Some((bytes, place)) = self.memory() {
            estimate.check(bytes, &place)?;
        }
        Ok(())
    }

    /// Refuses `--weights` other than f32 except on the Flex CPU backend in f32, whose
    /// kernels read narrower weights as stored (elsewhere every product would widen
    /// them again).
    pub fn check_weights(&self, format: quill_model::WeightFormat) -> Result<()> {
        #[cfg(feature = "flex")]
        if self.target == Target::Flex && self.dtype == DType::F32 {
            return Ok(());
        }
        anyhow::ensure!(
            format == quill_model::WeightFormat::F32,
            "--weights {format} runs on the CPU (--device cpu) with --dtype f32, not on {} with {}; on a GPU, --dtype bf16 or f16 stores the weights in 16 bits",
            self.target,
            self.dtype
        );
        Ok(())
    }

    /// Whether `other` runs on the same backend with the same float type (its device
    /// may differ): workers of one process must share a backend to sum together.
    pub fn same_backend(&self, other: &Prepared) -> bool {
        std::mem::discriminant(&self.target) == std::mem::discriminant(&other.target)
            && self.dtype == other.dtype
    }

    /// Whether it computes on the CPU (Flex, NdArray, or WGPU's CPU adapter).
    pub fn on_cpu(&self) -> bool {
        match &self.target {
            #[cfg(feature = "flex")]
            Target::Flex => true,
            #[cfg(feature = "ndarray")]
            Target::NdArray => true,
            #[cfg(feature = "wgpu")]
            Target::Wgpu(device) => *device == burn_wgpu::WgpuDevice::Cpu,
            #[cfg(feature = "cuda")]
            Target::Cuda(_) => false,
        }
    }

    /// Where it runs, e.g. `cpu (flex backend)`.
    pub fn name(&self) -> String {
        self.target.to_string()
    }

    fn dispatch<J: Job>(&self, job: J) -> Result<J::Output> {
        use burn_autodiff::Autodiff;
        match (self.target.clone(), self.dtype) {
            #[cfg(feature = "flex")]
            (Target::Flex, dtype) => {
                flex_float_type(dtype)?;
                job.run::<Autodiff<burn_flex::Flex>>(burn_flex::FlexDevice)
            }
            #[cfg(feature = "ndarray")]
            (Target::NdArray, DType::F32) => {
                job.run::<Autodiff<burn_ndarray::NdArray>>(burn_ndarray::NdArrayDevice::Cpu)
            }
            #[cfg(feature = "wgpu")]
            (Target::Wgpu(device), DType::F32) => job.run::<Autodiff<burn_wgpu::Wgpu<f32>>>(device),
            // `prepare` refused f16 on an adapter without 16-bit float shaders.
            #[cfg(feature = "wgpu")]
            (Target::Wgpu(device), DType::F16) => {
                job.run::<Autodiff<burn_wgpu::Wgpu<burn::tensor::f16>>>(device)
            }
            #[cfg(feature = "cuda")]
            (Target::Cuda(n), DType::F32) => {
                job.run::<Autodiff<burn_cuda::Cuda<f32>>>(burn_cuda::CudaDevice::new(n))
            }
            #[cfg(feature = "cuda")]
            (Target::Cuda(n), DType::Bf16) => job
                .run::<Autodiff<burn_cuda::Cuda<burn::tensor::bf16>>>(burn_cuda::CudaDevice::new(
                    n,
                )),
            #[cfg(feature = "cuda")]
            (Target::Cuda(n), DType::F16) => job
                .run::<Autodiff<burn_cuda::Cuda<burn::tensor::f16>>>(burn_cuda::CudaDevice::new(n)),
            (target, dtype) => Err(unsupported(&target, dtype)),
        }
    }
}

/// Makes `dtype` the Flex device's default float type: the type its parameters and
/// activations are made in (Flex computes in f32, f16 and bf16 alike; quill's fused
/// kernels serve f32 only). A device's default is set once per process, before its
/// first tensor, so a process that asks for two is refused.
#[cfg(feature = "flex")]
fn flex_float_type(dtype: DType) -> Result<()> {
    use burn::tensor::{FloatDType, IntDType};
    use burn_flex::{Flex, FlexDevice};
    let float = match dtype {
        DType::F32 => FloatDType::F32,
        DType::Bf16 => FloatDType::BF16,
        DType::F16 => FloatDType::F16,
    };
    if burn::tensor::set_default_dtypes::<Flex>(&FlexDevice, float, IntDType::I32).is_ok() {
        return Ok(());
    }
    let set = burn::tensor::get_device_settings::<Flex>(&FlexDevice).float_dtype;
    match set == float {
        true => Ok(()),
        false => Err(anyhow::anyhow!(
            "the CPU already computes in {set:?} in this process; it cannot switch to {dtype}"
        )),
    }
}

/// The error for a `--dtype` the backend or adapter cannot run.
fn unsupported(target: &Target, dtype: DType) -> anyhow::Error {
    anyhow::anyhow!(
        "--dtype {dtype} is not supported on {target}; supported: f32 everywhere, bf16 and f16 on cuda and cpu (flex), f16 on wgpu adapters with 16-bit float shaders"
    )
}

/// The machine's physical memory in bytes (`MemTotal` of `/proc/meminfo`; `None` where
/// there is no such file).
fn host_memory() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        assert_eq!("wgpu".parse(), Ok(DeviceChoice::Wgpu(WgpuChoice::Default)));
        assert_eq!("wgpu:cpu".parse(), Ok(DeviceChoice::Wgpu(WgpuChoice::Cpu)));
        assert_eq!(
            "wgpu:1".parse(),
            Ok(DeviceChoice::Wgpu(WgpuChoice::Discrete(1)))
        );
        for bad in ["gpu", "cuda:x", "cuda:", "wgpu:big", "mps"] {
            let err = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(err.contains("unknown device"), "{bad}: {err}");
        }
    }
}
