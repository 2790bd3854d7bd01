//! Where a process stands in a data-parallel run, the run's secret, and the
//! coordinator's address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use crate::TrainError;

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

    pub(super) fn coordinator(&self) -> Result<SocketAddr, TrainError> {
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

/// The address other ranks reach this machine at: loopback when the coordinator is
/// local, else the address this machine uses to reach the coordinator.
pub(super) fn own_address(coordinator: IpAddr) -> IpAddr {
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
}
