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
//!
//! - **Devices.** Several devices of one process are ranks of an in-process world, one
//!   worker thread each ([`run_on_devices`]).
//!
//! The module is four parts: [`world`] (where a process stands, the secret, the
//! coordinator's address), [`collective`] (joining and the collective calls),
//! `watchdog` (a call run beside the checks that end it when a peer is gone) and
//! `devices` (the workers of an in-process world).

mod collective;
mod devices;
mod watchdog;
mod world;

pub use collective::Collective;
pub use devices::run_on_devices;
pub use watchdog::stop_in_process_workers;
pub use world::{DEFAULT_COORDINATOR, RunSecret, World, coordinator_from_env, parse_coordinator};
