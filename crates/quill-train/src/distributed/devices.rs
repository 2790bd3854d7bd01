//! Data parallelism inside one process, burn-train's multi-device strategy: one worker
//! thread per device, each a rank of an in-process world summing through
//! burn-collective's local all-reduce; a worker that fails stops the others.

use std::time::Duration;

use super::World;
use crate::TrainError;

/// Runs one worker per job, `run(job, world)` on a thread of its own, job `r` as rank
/// `r` of an in-process world of `jobs.len()` ranks (collective calls time out after
/// `timeout`). The first worker to fail stops the others' collective calls
/// ([`super::stop_in_process_workers`]); the answer is the first error that is not
/// such a consequence ([`TrainError::OtherWorkerFailed`], which `caused_elsewhere`
/// recognises in `E`). A worker that panics is [`TrainError::WorkerPanicked`].
pub fn run_on_devices<J, E>(
    jobs: Vec<J>,
    timeout: Duration,
    run: impl Fn(J, World) -> Result<(), E> + Sync,
    caused_elsewhere: impl Fn(&E) -> bool,
) -> Result<(), E>
where
    J: Send,
    E: Send + From<TrainError>,
{
    let size = jobs.len();
    let run = &run;
    let results: Vec<Result<(), E>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (jobs.into_iter().enumerate())
            .map(|(rank, job)| {
                scope.spawn(move || {
                    let result = run(job, World::in_process(size, rank, timeout));
                    if result.is_err() {
                        super::stop_in_process_workers();
                    }
                    result
                })
            })
            .collect();
        (workers.into_iter())
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(TrainError::WorkerPanicked.into()))
            })
            .collect()
    });
    // A worker that stopped because another failed is not the cause.
    let mut errors: Vec<E> = results.into_iter().filter_map(Result::err).collect();
    errors.sort_by_key(|e| caused_elsewhere(e));
    errors.into_iter().next().map_or(Ok(()), Err)
}
