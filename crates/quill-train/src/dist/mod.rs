//! Data parallelism on Burn's collective engine (`burn-collective`): several processes,
//! on one machine or several, train one model, as PyTorch's DDP does for nanoGPT.
//!
//! - **Ranks.** `world_size` processes; rank 0 also runs the collective's orchestrator on
//!   the coordinator's port (`MASTER_PORT`), which the others reach at `HOST:PORT`. Rank
//!   `r` serves its tensors to its peers on port `PORT + 1 + r`.
//! - **Joining.** [`Collective::join`] registers with the orchestrator, then every rank
//!   learns every other's address (an all-gather, done as an all-reduce of one slot per
//!   rank), so that it can tell which rank stopped.
//! - **Faults.** Each collective call runs beside a watchdog: every second it checks that
//!   each peer still accepts connections on its port. A rank that died is named in the
//!   error within about a second; a call that does not finish within the timeout (a
//!   rank that hangs) is an error too. Burn's calls themselves never time out.
//! - **Trust.** Every connection between the processes of a run proves the run's
//!   secret ([`RunSecret`]); the coordinator listens on its host's address only, and
//!   each rank's data port on the address it advertises (every interface only with
//!   [`World::listen_any`]). Transfer ids are keyed by the secret, tensor messages are
//!   bounded by the model's size, and malformed messages end their connection.
//! - **Agreement.** [`Collective::check_same`] compares a hash across ranks (the
//!   settings at start-up, the weights at each evaluation) and names the ranks that
//!   differ from rank 0.

use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation};

use crate::TrainError;
use crate::trainer::strategy::Strategy;
use quill_data::Shard;

/// Where a process stands in a data-parallel run: torchrun's `WORLD_SIZE`, `RANK`,
/// `MASTER_ADDR:MASTER_PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    /// Processes in the run.
    pub size: usize,
    /// This process, `0..size`; rank 0 coordinates and writes.
    pub rank: usize,
    /// The coordinator's host name or address.
    pub host: String,
    /// The coordinator's port; rank `r` also uses `port + 1 + r`.
    pub port: u16,
    /// How long joining may take, and the longest a collective call may wait.
    pub timeout: Duration,
    /// The ranks are threads of this process, one per device (no coordinator, no
    /// ports): see [`World::in_process`].
    pub in_process: bool,
    /// The secret every connection of the run proves; a world of several processes
    /// needs one.
    pub secret: Option<RunSecret>,
    /// Listen on every interface (`0.0.0.0`) instead of the coordinator's and the
    /// rank's own address.
    pub listen_any: bool,
}

/// The per-run secret the processes of a data-parallel run prove to each other: at
/// least 16 visible ASCII characters. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct RunSecret(String);

impl RunSecret {
    /// The shortest secret accepted.
    pub const MIN_LEN: usize = 16;

    /// Checks `text` (surrounding whitespace, as a file's final newline, is ignored).
    pub fn new(text: &str) -> Result<RunSecret, TrainError> {
        let text = text.trim();
        if text.len() < Self::MIN_LEN || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TrainError::Parallel(format!(
                "the run's secret must be at least {} visible ASCII characters, without spaces",
                Self::MIN_LEN
            )));
        }
        Ok(RunSecret(text.to_string()))
    }

    /// The secret's text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RunSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunSecret(…)")
    }
}

/// Set when a worker of an in-process world stopped: the others stop waiting for it.
static IN_PROCESS_STOPPED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Tells the other workers of this process's in-process world that one of them stopped
/// (with an error): their collective calls end with an error instead of waiting.
pub fn stop_in_process_workers() {
    IN_PROCESS_STOPPED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The coordinator when nothing names one: this machine, torchrun's default port.
pub const DEFAULT_COORDINATOR: &str = "127.0.0.1:29500";

/// `HOST:PORT` (an IPv6 host in brackets) as its host and port.
pub fn parse_coordinator(coordinator: &str) -> Result<(String, u16), TrainError> {
    coordinator
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .map(|(h, p)| (h.to_string(), p))
        .ok_or_else(|| {
            TrainError::Parallel(format!("coordinator {coordinator:?} is not HOST:PORT"))
        })
}

/// The coordinator torchrun's variables name (`MASTER_ADDR:MASTER_PORT`), each part
/// defaulting to [`DEFAULT_COORDINATOR`]'s.
pub fn coordinator_from_env() -> String {
    let (host, port) = DEFAULT_COORDINATOR
        .split_once(':')
        .expect("the default coordinator is HOST:PORT");
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or(default.into());
    format!("{}:{}", var("MASTER_ADDR", host), var("MASTER_PORT", port))
}

impl World {
    /// A world, checked: a rank inside it, ports that exist.
    pub fn new(
        size: usize,
        rank: usize,
        coordinator: &str,
        timeout: Duration,
    ) -> Result<World, TrainError> {
        let bad = |why: String| TrainError::Parallel(why);
        if size == 0 {
            return Err(bad("the world size must be at least 1".into()));
        }
        if rank >= size {
            return Err(bad(format!(
                "rank {rank} is outside a world of {size} (ranks are 0 to {})",
                size - 1
            )));
        }
        let (host, port) = parse_coordinator(coordinator)?;
        if usize::from(port) + size > usize::from(u16::MAX) {
            return Err(bad(format!(
                "coordinator port {port} leaves no room for {size} ranks' ports above it"
            )));
        }
        Ok(World {
            size,
            rank,
            host,
            port,
            timeout,
            in_process: false,
            secret: None,
            listen_any: false,
        })
    }

    /// This world with the run's secret.
    pub fn with_secret(self, secret: RunSecret) -> World {
        World {
            secret: Some(secret),
            ..self
        }
    }

    /// This world listening on every interface (see [`World::listen_any`]).
    pub fn with_listen_any(self, listen_any: bool) -> World {
        World { listen_any, ..self }
    }

    /// Rank `rank` of `size` workers in this process, one per device, summing through
    /// burn-collective's local all-reduce.
    pub fn in_process(size: usize, rank: usize, timeout: Duration) -> World {
        World {
            size,
            rank,
            host: String::new(),
            port: 0,
            timeout,
            in_process: true,
            secret: None,
            listen_any: false,
        }
    }

    /// The port rank `rank` serves its tensors on.
    pub fn data_port(&self, rank: usize) -> u16 {
        self.port + 1 + rank as u16
    }

    fn coordinator(&self) -> Result<SocketAddr, TrainError> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.find(SocketAddr::is_ipv4))
            .ok_or_else(|| {
                TrainError::Parallel(format!(
                    "cannot resolve the coordinator's host {:?}",
                    self.host
                ))
            })
    }
}

/// A joined data-parallel world on backend `B` (the inner backend of training).
#[derive(Debug)]
pub struct Collective<B: Backend> {
    world: World,
    /// Every rank's data-service address, this one's included.
    peers: Vec<SocketAddr>,
    device: B::Device,
    /// Time spent in [`Collective::sum`] and the number of calls.
    spent: std::sync::Mutex<(Duration, usize)>,
    _backend: PhantomData<B>,
}

/// A 64-bit hash as four 16-bit pieces, each exact in `f32`.
fn hash_pieces(hash: u64) -> [f32; 4] {
    std::array::from_fn(|i| ((hash >> (16 * i)) & 0xffff) as f32)
}

fn hash_from_pieces(pieces: &[f32]) -> u64 {
    (pieces.iter().enumerate()).fold(0, |h, (i, &p)| h | ((p as u64) << (16 * i)))
}

impl<B: Backend> Collective<B> {
    /// Joins the world on `device`: rank 0 starts the orchestrator, every rank registers
    /// and learns the others' addresses. Waits at most `world.timeout` for all ranks.
    /// No tensor message may carry more than `max_values` f32 values (the model's
    /// parameter count: a peer that sends more is refused).
    pub fn join(world: World, device: &B::Device, max_values: usize) -> Result<Self, TrainError> {
        if world.in_process {
            return Self::join_in_process(world, device);
        }
        let Some(secret) = &world.secret else {
            return Err(TrainError::Parallel(
                "a run of several processes needs its secret: `quill launch` makes one; ranks started by hand read it from QUILL_SECRET or --secret-file FILE".into(),
            ));
        };
        use burn_communication::websocket::guard;
        guard::set_secret(Some(secret.expose()));
        // The values, their shape and msgpack's framing.
        guard::set_max_message_size(max_values.saturating_mul(4).saturating_add(64 << 10));
        let coordinator = world.coordinator()?;
        let own_ip = own_address(coordinator.ip());
        let data_port = world.data_port(world.rank);
        let listen = |ip: IpAddr| match world.listen_any {
            true => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            false => ip,
        };
        let in_use = |ip: IpAddr, port: u16| {
            TcpListener::bind((listen(ip), port)).is_err().then(|| {
                TrainError::Parallel(format!(
                    "cannot listen on {} port {port} (in use by another run, or not this machine's address); pick another coordinator port",
                    listen(ip)
                ))
            })
        };
        if world.rank == 0
            && let Some(err) = in_use(coordinator.ip(), world.port)
        {
            return Err(err);
        }
        if let Some(err) = in_use(own_ip, data_port) {
            return Err(err);
        }
        if world.rank == 0 {
            let (host, port) = (listen(coordinator.ip()).to_string(), world.port);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| TrainError::Parallel(format!("orchestrator runtime: {e}")))?;
            std::thread::Builder::new()
                .name("quill-orchestrator".into())
                .spawn(move || {
                    runtime.block_on(burn_collective::start_global_orchestrator(&host, port));
                })
                .map_err(|e| TrainError::Parallel(format!("orchestrator thread: {e}")))?;
        }
        let address = |ip: IpAddr, port: u16| format!("ws://{ip}:{port}");
        let config = CollectiveConfig::default()
            .with_num_devices(1)
            .with_num_nodes(world.size as u32)
            .with_global_address(address(coordinator.ip(), world.port).parse().expect("text"))
            .with_node_address(address(own_ip, data_port).parse().expect("text"))
            .with_data_service_port(data_port)
            .with_data_service_host(listen(own_ip).to_string())
            // Tree(2), ring and centralized took about as long for 42 MB between two
            // ranks on one machine (BENCHMARKS.md).
            .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2));
        let rank = world.rank;
        let on = device.clone();
        let registered = watch(
            move || burn_collective::register::<B>(PeerId(rank as u32), on, config),
            Duration::from_millis(500),
            world.timeout,
            || None,
        )
        .map_err(|_| {
            let waited = world.timeout.as_secs();
            TrainError::Parallel(if rank != 0 && !accepts(coordinator) {
                format!("cannot reach the coordinator at {coordinator} within {waited} s (is rank 0 running?)")
            } else {
                format!(
                    "not all {} ranks joined within {waited} s (coordinator {coordinator})",
                    world.size
                )
            })
        })?;
        registered.map_err(|e| {
            use burn_collective::{CollectiveError, GlobalCollectiveError};
            TrainError::Parallel(match e {
                CollectiveError::RegisterParamsMismatch
                | CollectiveError::Global(GlobalCollectiveError::RegisterParamsMismatch) => {
                    format!(
                        "rank {rank}'s world size ({}) differs from the ranks that joined first",
                        world.size
                    )
                }
                e => format!("joining the world: {e:?}"),
            })
        })?;
        // No peers to watch until the addresses are known.
        let mut collective = Collective::joined(world, device);
        // Everyone's address: an all-gather of (IPv4, port).
        let ip = match own_ip {
            IpAddr::V4(v4) => v4.octets().map(f32::from),
            IpAddr::V6(_) => [127.0, 0.0, 0.0, 1.0],
        };
        let slots = collective.gather(&[ip[0], ip[1], ip[2], ip[3], f32::from(data_port)])?;
        collective.peers = slots
            .iter()
            .map(|s| {
                let ip = Ipv4Addr::new(s[0] as u8, s[1] as u8, s[2] as u8, s[3] as u8);
                SocketAddr::new(IpAddr::V4(ip), s[4] as u16)
            })
            .collect();
        Ok(collective)
    }

    /// Joins the workers of this process (see [`World::in_process`]).
    fn join_in_process(world: World, device: &B::Device) -> Result<Self, TrainError> {
        let config = CollectiveConfig::default().with_num_devices(world.size);
        let (rank, on) = (world.rank, device.clone());
        watch(
            move || burn_collective::register::<B>(PeerId(rank as u32), on, config),
            Duration::from_millis(200),
            world.timeout,
            stopped_in_process,
        )
        .map_err(|_| {
            TrainError::Parallel(format!(
                "not all {} device workers joined within {} s",
                world.size,
                world.timeout.as_secs()
            ))
        })?
        .map_err(|e| TrainError::Parallel(format!("joining the device workers: {e:?}")))?;
        Ok(Collective::joined(world, device))
    }

    /// A collective registered with burn-collective, before any peer address is known.
    fn joined(world: World, device: &B::Device) -> Self {
        Collective {
            peers: Vec::new(),
            world,
            device: device.clone(),
            spent: Default::default(),
            _backend: PhantomData,
        }
    }

    /// The world this process joined.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// Sums `tensor` over all ranks; every rank gets the sum.
    pub fn sum(&self, tensor: Tensor<B, 1>) -> Result<Tensor<B, 1>, TrainError> {
        if self.world.size == 1 {
            return Ok(tensor);
        }
        let start = Instant::now();
        let rank = PeerId(self.world.rank as u32);
        let primitive = tensor.into_primitive().tensor();
        let summed = watch(
            move || burn_collective::all_reduce::<B>(rank, primitive, ReduceOperation::Sum),
            Duration::from_secs(1),
            self.world.timeout,
            || self.stopped_peer(),
        )
        .map_err(|e| match e {
            Waited::TimedOut => TrainError::Parallel(format!(
                "the other ranks did not answer within {} s",
                self.world.timeout.as_secs()
            )),
            Waited::Stopped(why) => why,
        })?
        .map_err(|e| {
            // Burn names peers by its own node numbers; name the rank that stopped.
            let stopped = (0..10).find_map(|_| {
                let found = self.stopped_peer();
                if found.is_none() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                found
            });
            stopped.unwrap_or_else(|| TrainError::Parallel(format!("all-reduce failed: {e:?}")))
        })?;
        if let Ok(mut spent) = self.spent.lock() {
            *spent = (spent.0 + start.elapsed(), spent.1 + 1);
        }
        Ok(Tensor::from_primitive(TensorPrimitive::Float(summed)))
    }

    /// Wall time spent in [`Collective::sum`] so far (waiting for slower ranks
    /// included), and the number of sums.
    pub fn time_in_sums(&self) -> (Duration, usize) {
        self.spent
            .lock()
            .map_or_else(|_| Default::default(), |s| *s)
    }

    /// Every rank's `values` (the same length on every rank), by rank.
    pub fn gather(&self, values: &[f32]) -> Result<Vec<Vec<f32>>, TrainError> {
        let (n, rank) = (values.len(), self.world.rank);
        let mut slots = vec![0.0f32; n * self.world.size];
        slots[rank * n..(rank + 1) * n].copy_from_slice(values);
        let shape = [n * self.world.size];
        let slots = Tensor::<B, 1>::from_data(TensorData::new(slots, shape), &self.device);
        let all = self
            .sum(slots)?
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>();
        let all = all.map_err(|e| TrainError::Parallel(format!("{e:?}")))?;
        Ok(all.chunks(n.max(1)).map(<[f32]>::to_vec).collect())
    }

    /// Checks that every rank has the same `hash` of `what`; the error names the ranks
    /// whose hash differs from rank 0's.
    pub fn check_same(&self, what: &str, hash: u64) -> Result<(), TrainError> {
        let hashes: Vec<u64> = (self.gather(&hash_pieces(hash))?.iter())
            .map(|p| hash_from_pieces(p))
            .collect();
        let differ: Vec<String> = (1..hashes.len())
            .filter(|&r| hashes[r] != hashes[0])
            .map(|r| r.to_string())
            .collect();
        if differ.is_empty() {
            return Ok(());
        }
        Err(TrainError::Parallel(format!(
            "{what} of rank{} {} differ from rank 0's",
            if differ.len() > 1 { "s" } else { "" },
            differ.join(", ")
        )))
    }

    /// A peer that no longer accepts connections (or, in process, a worker that
    /// failed): it stopped.
    fn stopped_peer(&self) -> Option<TrainError> {
        if self.world.in_process {
            return stopped_in_process();
        }
        (self.peers.iter().enumerate())
            .filter(|&(r, _)| r != self.world.rank)
            .find(|(_, addr)| !accepts(**addr))
            .map(|(r, addr)| {
                TrainError::Parallel(format!("rank {r} stopped (nothing answers at {addr})"))
            })
    }
}

impl<B: Backend> Strategy<B> for Collective<B> {
    fn shard(&self) -> Shard {
        Shard {
            rank: self.world.rank,
            ranks: self.world.size,
        }
    }
    fn sum(&self, tensor: Tensor<B, 1>) -> Result<Tensor<B, 1>, TrainError> {
        Collective::sum(self, tensor)
    }
    fn gather(&self, values: &[f32]) -> Result<Vec<Vec<f32>>, TrainError> {
        Collective::gather(self, values)
    }
    fn check_same(&self, what: &str, hash: u64) -> Result<(), TrainError> {
        Collective::check_same(self, what, hash)
    }
    fn time_in_sums(&self) -> (Duration, usize) {
        Collective::time_in_sums(self)
    }
}

fn stopped_in_process() -> Option<TrainError> {
    IN_PROCESS_STOPPED
        .load(std::sync::atomic::Ordering::SeqCst)
        .then_some(TrainError::OtherWorkerFailed)
}

/// Why [`watch`] gave up.
enum Waited {
    /// `timeout` passed.
    TimedOut,
    /// `check` found a reason.
    Stopped(TrainError),
}

/// Runs `work` on its own thread and waits for it, calling `check` every `every`: gives
/// up when `check` finds a reason or after `timeout`. Burn's collective calls block
/// forever when a peer is gone; the abandoned thread ends with the process.
fn watch<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
    every: Duration,
    timeout: Duration,
    check: impl Fn() -> Option<TrainError>,
) -> Result<T, Waited> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("quill-collective".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| Waited::Stopped(TrainError::Parallel(format!("collective thread: {e}"))))?;
    let start = Instant::now();
    loop {
        match rx.recv_timeout(every) {
            Ok(value) => return Ok(value),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Waited::Stopped(TrainError::Parallel(
                    "the collective call failed inside Burn".into(),
                )));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(why) = check() {
            return Err(Waited::Stopped(why));
        }
        if start.elapsed() >= timeout {
            return Err(Waited::TimedOut);
        }
    }
}

/// Whether something accepts TCP connections at `addr`.
fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// The address other ranks reach this machine at: loopback when the coordinator is
/// local, else the address this machine uses to reach the coordinator.
fn own_address(coordinator: IpAddr) -> IpAddr {
    if coordinator.is_loopback() {
        return IpAddr::V4(Ipv4Addr::LOCALHOST);
    }
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            s.connect(SocketAddr::new(coordinator, 9))?;
            s.local_addr()
        })
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::strategy::{fingerprint, fingerprint_more};

    /// Transfer ids on the wire are keyed by the run's secret: another run's (or a
    /// stranger's) guess of them is wrong.
    #[test]
    fn transfer_ids_are_keyed_by_the_secret() {
        use burn_communication::websocket::guard;
        let keys: Vec<u64> = ["first-run-secret-0123", "second-run-secret-012"]
            .iter()
            .map(|secret| {
                guard::set_secret(Some(secret));
                guard::transfer_key()
            })
            .collect();
        guard::set_secret(None);
        assert_eq!(guard::transfer_key(), 0);
        assert!(
            keys[0] != keys[1] && keys.iter().all(|&k| k != 0),
            "{keys:?}"
        );
    }

    #[test]
    fn worlds_are_checked() {
        let t = Duration::from_secs(1);
        let w = World::new(2, 1, "127.0.0.1:29500", t).unwrap();
        assert_eq!(
            (w.host.as_str(), w.port, w.data_port(1)),
            ("127.0.0.1", 29500, 29502)
        );
        for (size, rank, at, message) in [
            (0, 0, "h:1", "at least 1"),
            (2, 2, "h:1", "rank 2 is outside a world of 2"),
            (2, 0, "h", "is not HOST:PORT"),
            (2, 0, ":80", "is not HOST:PORT"),
            (2, 0, "h:99999", "is not HOST:PORT"),
            (4, 0, "h:65534", "no room"),
        ] {
            let err = World::new(size, rank, at, t).unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
    }

    #[test]
    fn hashes_travel_exactly_as_four_pieces() {
        for hash in [0, 1, u64::MAX, fingerprint(b"quill"), 0x8000_0000_0000_ffff] {
            assert_eq!(hash_from_pieces(&hash_pieces(hash)), hash);
        }
        assert_ne!(fingerprint(b"seed=1"), fingerprint(b"seed=2"));
        let whole = fingerprint(b"quill weights");
        assert_eq!(fingerprint_more(fingerprint(b"quill "), b"weights"), whole);
    }
}
