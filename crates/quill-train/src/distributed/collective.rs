//! A joined data-parallel world: registering with the orchestrator, learning the
//! peers' addresses, and the collective calls, each run beside the watchdog.

use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation};
use quill_data::Shard;

use super::watchdog::{Waited, accepts, stopped_in_process, watch};
use super::world::{World, own_address};
use crate::TrainError;
use crate::trainer::strategy::Strategy;

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
    fn hashes_travel_exactly_as_four_pieces() {
        for hash in [0, 1, u64::MAX, fingerprint(b"quill"), 0x8000_0000_0000_ffff] {
            assert_eq!(hash_from_pieces(&hash_pieces(hash)), hash);
        }
        assert_ne!(fingerprint(b"seed=1"), fingerprint(b"seed=2"));
        let whole = fingerprint(b"quill weights");
        assert_eq!(fingerprint_more(fingerprint(b"quill "), b"weights"), whole);
    }
}
