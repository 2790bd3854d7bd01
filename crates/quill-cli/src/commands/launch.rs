//! `quill launch`: starts the ranks of a data-parallel run on this machine, as torchrun
//! does: each rank is this program with the given command and torchrun's environment
//! (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`). Their output
//! comes back line by line with a `[rank R]` prefix; Ctrl-C (and SIGTERM, SIGHUP) is
//! passed on to every rank (they save a checkpoint together); when one rank fails, the
//! others are stopped. The ranks prove a per-run secret to each other: a fresh one in
//! `QUILL_SECRET`, unless the run brings its own (`QUILL_SECRET` or `--secret-file`,
//! which a run on several machines needs, the same on each).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cli::LaunchArgs;
use crate::commands::train::SECRET_VAR;

/// Ctrl-C presses not yet passed on to the ranks.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

/// How long stopped ranks get to exit before they are killed.
const GRACE: Duration = Duration::from_secs(5);

pub fn run(args: LaunchArgs) -> Result<()> {
    if args.nproc == 0 || args.nnodes == 0 {
        bail!("--nproc and --nnodes must be at least 1");
    }
    if args.node_rank >= args.nnodes {
        bail!(
            "--node-rank {} is outside {} machines (0 to {})",
            args.node_rank,
            args.nnodes,
            args.nnodes - 1
        );
    }
    let coordinator = match (&args.coordinator, args.nnodes) {
        (Some(c), _) => c.clone(),
        (None, 1) => quill_train::DEFAULT_COORDINATOR.into(),
        (None, _) => bail!("--coordinator HOST:PORT is needed with several machines"),
    };
    let (host, port) = quill_train::parse_coordinator(&coordinator)?;
    let world = args.nproc * args.nnodes;
    let brings_secret = std::env::var_os(SECRET_VAR).is_some()
        || (args.command.iter())
            .any(|a| a.to_str().is_some_and(|a| a.starts_with("--secret-file")));
    let secret = match (brings_secret, args.nnodes) {
        (true, _) => None,
        (false, 1) => Some(fresh_secret()?),
        (false, _) => bail!(
            "a run on several machines needs one secret on all of them: set {SECRET_VAR} (at least 16 characters), or pass --secret-file FILE to train"
        ),
    };
    // As torchrun sets OMP_NUM_THREADS: the ranks share this machine's cores.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .div_ceil(args.nproc)
        .max(1);
    let exe = std::env::current_exe().context("the path of this program")?;
    let (mut ranks, mut relays) = (Vec::new(), Vec::new());
    for local in 0..args.nproc {
        let rank = args.node_rank * args.nproc + local;
        let mut command = Command::new(&exe);
        command
            .args(rank_command(&args.command, local, args.nproc)?)
            .env("WORLD_SIZE", world.to_string())
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", local.to_string())
            .env("MASTER_ADDR", &host)
            .env("MASTER_PORT", port.to_string())
            .env(super::train::LAUNCHED_VAR, "1")
            .envs(secret.as_ref().map(|s| (SECRET_VAR, s)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            command.env("RAYON_NUM_THREADS", threads.to_string());
        }
        // The terminal's Ctrl-C reaches this process only; it is passed on once.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting rank {rank}"))?;
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        relays.push(std::thread::spawn(move || relay(out, rank, false)));
        relays.push(std::thread::spawn(move || relay(err, rank, true)));
        ranks.push((rank, child));
    }
    let _ = ctrlc::set_handler(|| {
        INTERRUPTS.fetch_add(1, Ordering::SeqCst);
    });
    let outcome = supervise(ranks);
    // Every rank has ended: print the rest of what they wrote.
    for relay in relays {
        let _ = relay.join();
    }
    outcome
}

/// 32 random bytes from the operating system, as hex.
fn fresh_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no random bytes for the run's secret: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The command of the rank with local index `local` of `nproc`: one device each, as
/// nanoGPT's DDP takes `cuda:LOCAL_RANK`. `--device a,b` gives rank 0 `a` and rank 1
/// `b`; a bare `--device cuda` (or `wgpu`) becomes `cuda:LOCAL_RANK`.
fn rank_command(
    command: &[std::ffi::OsString],
    local: usize,
    nproc: usize,
) -> Result<Vec<std::ffi::OsString>> {
    let mut out = Vec::with_capacity(command.len());
    let mut args = command.iter();
    while let Some(arg) = args.next() {
        let (flag, value) = match arg.to_str() {
            Some("--device") => match args.next() {
                Some(value) => ("--device", value.to_string_lossy().into_owned()),
                None => {
                    out.push(arg.clone());
                    continue;
                }
            },
            Some(a) if a.starts_with("--device=") => ("--device", a["--device=".len()..].into()),
            _ => {
                out.push(arg.clone());
                continue;
            }
        };
        let devices: Vec<&str> = value.split(',').collect();
        let device = match devices.as_slice() {
            [one @ ("cuda" | "wgpu")] => format!("{one}:{local}"),
            [one] => one.to_string(),
            many if many.len() == nproc => many[local].to_string(),
            many => bail!(
                "--device lists {} devices for {nproc} ranks; give one per rank",
                many.len()
            ),
        };
        out.push(flag.into());
        out.push(device.into());
    }
    Ok(out)
}

/// The exit status of a rank that Ctrl-C stopped cleanly.
const INTERRUPTED: i32 = 130;

/// Waits for every rank; passes Ctrl-C on; when a rank fails, stops the others and
/// names it.
fn supervise(mut ranks: Vec<(usize, Child)>) -> Result<()> {
    let mut running: Vec<bool> = vec![true; ranks.len()];
    let mut interrupted = false;
    loop {
        for _ in 0..INTERRUPTS.swap(0, Ordering::SeqCst) {
            for (i, (_, child)) in ranks.iter_mut().enumerate() {
                if running[i] {
                    signal(child, Signal::Interrupt);
                }
            }
        }
        let mut failed = Vec::new();
        for (i, (rank, child)) in ranks.iter_mut().enumerate() {
            if !running[i] {
                continue;
            }
            let Some(status) = child.try_wait().context("waiting for a rank")? else {
                continue;
            };
            running[i] = false;
            // 130: the rank stopped at Ctrl-C, its work saved.
            if status.code() == Some(INTERRUPTED) {
                interrupted = true;
            } else if !status.success() {
                failed.push((*rank, status));
            }
        }
        // A rank killed by a signal is the cause; ranks that ended with an error at the
        // same time saw it go.
        failed.sort_by_key(|(_, status)| status.code().is_some());
        if let Some(&(rank, status)) = failed.first() {
            stop_all(&mut ranks, &mut running);
            bail!("rank {rank} {}; stopped the other ranks", describe(status));
        }
        if running.iter().all(|r| !r) {
            return match interrupted {
                true => Err(super::Interrupted.into()),
                false => Ok(()),
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks every running rank to terminate, then kills those still there after [`GRACE`].
fn stop_all(ranks: &mut [(usize, Child)], running: &mut [bool]) {
    for (i, (_, child)) in ranks.iter_mut().enumerate() {
        if running[i] {
            signal(child, Signal::Terminate);
        }
    }
    let start = Instant::now();
    for (i, (_, child)) in ranks.iter_mut().enumerate() {
        while running[i] {
            if let Ok(Some(_)) = child.try_wait() {
                running[i] = false;
            } else if start.elapsed() > GRACE {
                let _ = child.kill();
                let _ = child.wait();
                running[i] = false;
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

enum Signal {
    Interrupt,
    Terminate,
}

fn signal(child: &mut Child, signal: Signal) {
    #[cfg(unix)]
    {
        let number = match signal {
            Signal::Interrupt => libc::SIGINT,
            Signal::Terminate => libc::SIGTERM,
        };
        // SAFETY: kill(2) on the id of a child not yet waited for (so not reused).
        unsafe {
            libc::kill(child.id() as libc::pid_t, number);
        }
    }
    #[cfg(not(unix))]
    {
        if matches!(signal, Signal::Terminate) {
            let _ = child.kill();
        }
    }
}

/// `exited with status 1`, `was killed by signal 9 (SIGKILL)`.
fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    if let Some(number) = std::os::unix::process::ExitStatusExt::signal(&status) {
        let name = match number {
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGTERM => " (SIGTERM)",
            libc::SIGINT => " (SIGINT)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGABRT => " (SIGABRT)",
            _ => "",
        };
        return format!("was killed by signal {number}{name}");
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("ended: {status}"),
    }
}

/// Copies a rank's output line by line, each with the rank's prefix.
fn relay(stream: impl Read, rank: usize, to_stderr: bool) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        // Progress bars redraw with carriage returns: keep the last state.
        let text = text.rsplit('\r').next().unwrap_or_default();
        let prefixed = format!("[rank {rank}] {text}\n");
        let _ = if to_stderr {
            std::io::stderr().lock().write_all(prefixed.as_bytes())
        } else {
            std::io::stdout().lock().write_all(prefixed.as_bytes())
        };
        line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(command: &str, local: usize, nproc: usize) -> Result<String> {
        let command: Vec<_> = command.split(' ').map(Into::into).collect();
        let out = rank_command(&command, local, nproc)?;
        Ok(out
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "))
    }

    #[test]
    fn each_rank_gets_its_device() {
        let c = "train --device cuda:0,cuda:1 --preset cpu";
        assert_eq!(rank(c, 1, 2).unwrap(), "train --device cuda:1 --preset cpu");
        assert_eq!(
            rank("train --device cuda", 1, 2).unwrap(),
            "train --device cuda:1"
        );
        assert_eq!(
            rank("train --device=wgpu", 0, 2).unwrap(),
            "train --device wgpu:0"
        );
        assert_eq!(
            rank("train --device flex", 1, 2).unwrap(),
            "train --device flex"
        );
        assert_eq!(
            rank("train --preset cpu", 1, 2).unwrap(),
            "train --preset cpu"
        );
        let err = rank("train --device cuda:0,cuda:1", 0, 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--device lists 2 devices for 3 ranks; give one per rank"
        );
    }
}
