//! Data-parallel training with real processes on Flex over localhost: two ranks train
//! the model of one process with their batches together, resume exactly, and stop
//! cleanly (one line each) when a rank dies, differs, cannot reach the coordinator or
//! cannot see the data.

use crate::common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TINY_MODEL, error_line, quill, stdout, step_losses};

/// A directory with tiny Shakespeare at data/tiny.txt.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let corpus = common::tiny_shakespeare();
    fs::create_dir_all(dir.path().join("data")).unwrap();
    fs::copy(&corpus, dir.path().join("data/tiny.txt")).unwrap();
    dir
}

/// `quill train` on the tiny model and corpus, `batch` rows per rank, then `extra`.
fn train_args(batch: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["train", "--data", "data/tiny.txt", "--device", "flex"];
    // The tiny model with this test's batch size.
    let model = TINY_MODEL.split(|a| *a == "--batch-size").next().unwrap();
    args.extend_from_slice(model);
    args.extend_from_slice(&["--batch-size", batch, "--eval-iters", "2"]);
    args.extend_from_slice(&["--final-eval-iters", "4", "--sample-tokens", "0"]);
    args.extend_from_slice(extra);
    args.into_iter().map(String::from).collect()
}

/// [`train_args`] with batch 4 for `max_iters` steps, evaluating every `eval`, into
/// `out`.
fn run_args(max_iters: &str, eval: &str, out: &str) -> Vec<String> {
    train_args(
        "4",
        &[
            "--max-iters",
            max_iters,
            "--eval-interval",
            eval,
            "--out",
            out,
        ],
    )
}

/// `quill train --resume FROM --max-iters N` on the tiny corpus.
fn resume_args(from: &str, max_iters: &str) -> Vec<String> {
    ["train", "--resume", from, "--max-iters", max_iters]
        .into_iter()
        .chain([
            "--data",
            "data/tiny.txt",
            "--device",
            "flex",
            "--sample-tokens",
            "0",
        ])
        .map(String::from)
        .collect()
}

/// The secret the ranks these tests start by hand share.
const SECRET: &str = "0123456789abcdef-test-secret";

/// Rank `rank` of `world` ranks coordinated at 127.0.0.1:`port`, started now, with the
/// run's secret in `QUILL_SECRET`.
fn spawn_rank(dir: &Path, args: &[String], world: usize, rank: usize, port: u16) -> Child {
    let mut args = args.to_vec();
    args.extend(["--world-size".into(), world.to_string(), "--rank".into()]);
    args.extend([rank.to_string(), "--coordinator".into()]);
    args.push(format!("127.0.0.1:{port}"));
    spawn_quill_with(dir, &args, &[("QUILL_SECRET", SECRET)])
}

/// `quill ARGS` in `dir`, started now, its output piped.
fn spawn_quill(dir: &Path, args: &[String]) -> Child {
    spawn_quill_with(dir, args, &[])
}

/// [`spawn_quill`] with environment variables, and without a `QUILL_SECRET` of the
/// test's own environment.
fn spawn_quill_with(dir: &Path, args: &[String], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_quill"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .env_remove("QUILL_SECRET")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quill starts")
}

/// Both ranks of a 2-rank run, to the end.
fn two_ranks(dir: &Path, args: &[String], port: u16) -> [Output; 2] {
    let ranks = [0, 1].map(|r| spawn_rank(dir, args, 2, r, port));
    ranks.map(|r| r.wait_with_output().unwrap())
}

/// The weights fingerprint a rank printed at the end.
fn fingerprint(out: &str) -> String {
    let at = out.find("weights fingerprint ").expect(out) + "weights fingerprint ".len();
    out[at..at + 16].to_string()
}

/// The float weights of `run/last`, in file order.
fn weights(dir: &Path, run: &str) -> Vec<(String, Vec<f32>)> {
    let bytes = fs::read(dir.join(run).join("last/model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let mut tensors: Vec<(String, Vec<f32>)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .map(|(name, t)| {
            let at = t["data_offsets"].as_array().unwrap();
            let (a, b) = (at[0].as_u64().unwrap(), at[1].as_u64().unwrap());
            let data = &bytes[8 + header_len + a as usize..8 + header_len + b as usize];
            let values = data
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name.clone(), values)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

#[test]
fn two_ranks_of_six_train_the_model_of_one_rank_of_twelve() {
    let dir = setup();
    let steps = ["--max-iters", "20", "--eval-interval", "10"];
    stdout(&quill(
        &train_args("12", &[&steps[..], &["--out", "one"]].concat())
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        dir.path(),
    ));
    let [rank0, rank1] = two_ranks(
        dir.path(),
        &train_args("6", &[&steps[..], &["--out", "two"]].concat()),
        29810,
    );
    let (out0, out1) = (stdout(&rank0), stdout(&rank1));
    // Each rank checked at every evaluation that the weights are the same everywhere.
    assert_eq!(fingerprint(&out0), fingerprint(&out1));
    assert!(
        out1.contains("rank 1: stopped after 20 iterations"),
        "{out1}"
    );
    // Rank 0 alone writes.
    assert!(out0.contains("done: 20 iterations"), "{out0}");
    assert!(!out1.contains("effective configuration"), "{out1}");

    same_training(dir.path(), "one", "two");
}

/// Runs `one` and `two` took the same 20 steps within 1e-4: losses, evaluations and
/// the final weights.
fn same_training(dir: &Path, first: &str, second: &str) {
    let runs = (first, second);
    let (one, two) = (step_losses(dir, first), step_losses(dir, second));
    assert_eq!(one.len(), 20);
    assert_eq!(two.len(), 20);
    for ((i, a), (j, b)) in one.iter().zip(&two) {
        assert_eq!(i, j);
        assert!((a - b).abs() <= 1e-4, "step {i}: {a} vs {b}");
    }
    // The losses move: equality is not two constant runs.
    assert!((one[0].1 - one[19].1).abs() > 1e-3, "{one:?}");
    let metrics = |run: &str| -> Vec<f64> {
        fs::read_to_string(dir.join(run).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["val_loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    let (val1, val2) = (metrics(runs.0), metrics(runs.1));
    assert_eq!(val1.len(), 3);
    for (a, b) in val1.iter().zip(&val2) {
        assert!((a - b).abs() <= 1e-4, "{val1:?} vs {val2:?}");
    }
    let (w1, w2) = (weights(dir, runs.0), weights(dir, runs.1));
    assert_eq!(w1.len(), w2.len());
    for ((name, a), (_, b)) in w1.iter().zip(&w2) {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst <= 1e-4, "{name}: {worst}");
    }
}

#[test]
fn a_two_rank_run_resumes_exactly() {
    let dir = setup();
    let straight = run_args("8", "4", "straight");
    for out in two_ranks(dir.path(), &straight, 29820) {
        stdout(&out);
    }
    let split = run_args("4", "4", "split");
    for out in two_ranks(dir.path(), &split, 29830) {
        stdout(&out);
    }
    let resume = resume_args("split/last", "8");
    let [r0, r1] = two_ranks(dir.path(), &resume, 29840);
    let (r0, r1) = (stdout(&r0), stdout(&r1));
    assert_eq!(fingerprint(&r0), fingerprint(&r1));
    let expected = step_losses(dir.path(), "straight");
    assert_eq!(expected.len(), 8);
    assert_eq!(step_losses(dir.path(), "split"), expected);
    assert_eq!(
        weights(dir.path(), "split"),
        weights(dir.path(), "straight")
    );
}

#[test]
fn a_killed_rank_stops_the_other_with_its_name() {
    let dir = setup();
    let args = run_args("100000", "100000", "k");
    let mut rank0 = spawn_rank(dir.path(), &args, 2, 0, 29850);
    let mut rank1 = spawn_rank(dir.path(), &args, 2, 1, 29850);
    wait_for_steps(&dir.path().join("k/steps.jsonl"));
    rank1.kill().unwrap();
    rank1.wait().unwrap();
    let killed = Instant::now();
    let out = rank0_exit(&mut rank0, Duration::from_secs(20));
    let line = error_line(&out);
    assert!(line.starts_with("error: rank 1 stopped"), "{line}");
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
}

/// Waits until rank 0 has recorded a few steps: training is under way.
fn wait_for_steps(steps: &Path) {
    let start = Instant::now();
    while fs::metadata(steps).map_or(true, |m| m.len() < 200) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no steps recorded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits at most `limit` for `child` to end (killing it then, failing the test).
fn rank0_exit(child: &mut Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("rank 0 still runs {limit:?} after rank 1 died");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out.stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut out.stderr)
        .unwrap();
    out
}

#[test]
fn ranks_with_other_settings_are_refused_at_start() {
    let dir = setup();
    let args = train_args("4", &["--max-iters", "4", "--out", "m"]);
    let other: Vec<String> = args
        .iter()
        .cloned()
        .chain(["--seed".into(), "7".into()])
        .collect();
    let rank0 = spawn_rank(dir.path(), &args, 2, 0, 29860);
    let rank1 = spawn_rank(dir.path(), &other, 2, 1, 29860);
    for out in [rank0, rank1].map(|r| r.wait_with_output().unwrap()) {
        assert_eq!(
            error_line(&out),
            "error: the settings (model, training, data, world size or checkpoint) of rank 1 differ from rank 0's"
        );
    }
    assert!(!dir.path().join("m/steps.jsonl").exists());
}

#[test]
fn an_unreachable_coordinator_and_a_missing_rank_time_out() {
    let dir = setup();
    let args = train_args(
        "4",
        &[
            "--max-iters",
            "4",
            "--out",
            "u",
            "--collective-timeout",
            "2",
        ],
    );
    let start = Instant::now();
    let alone = spawn_rank(dir.path(), &args, 2, 1, 29870)
        .wait_with_output()
        .unwrap();
    assert_eq!(
        error_line(&alone),
        "error: cannot reach the coordinator at 127.0.0.1:29870 within 2 s (is rank 0 running?)"
    );
    assert!(start.elapsed() < Duration::from_secs(15));
    // Rank 1 cannot see the data: it says so; rank 0 gives up waiting for it.
    let missing: Vec<String> = args
        .iter()
        .map(|a| {
            if a == "data/tiny.txt" {
                "data/absent.txt".into()
            } else {
                a.clone()
            }
        })
        .collect();
    let rank0 = spawn_rank(dir.path(), &args, 2, 0, 29880);
    let rank1 = spawn_rank(dir.path(), &missing, 2, 1, 29880);
    let [out0, out1] = [rank0, rank1].map(|r| r.wait_with_output().unwrap());
    let line = error_line(&out1);
    assert!(line.contains("data/absent.txt"), "{line}");
    assert_eq!(
        error_line(&out0),
        "error: not all 2 ranks joined within 2 s (coordinator 127.0.0.1:29880)"
    );
}

#[test]
fn launch_starts_the_ranks_and_names_one_that_dies() {
    let dir = setup();
    let mut args = vec!["launch".to_string(), "--nproc".into(), "2".into()];
    args.extend([
        "--coordinator".into(),
        "127.0.0.1:29890".into(),
        "--".into(),
    ]);
    args.extend(train_args(
        "4",
        &["--max-iters", "6", "--eval-interval", "3", "--out", "l"],
    ));
    // One device per rank, from a list (launch hands them out).
    for arg in args.iter_mut().filter(|a| *a == "flex") {
        *arg = "flex,flex".into();
    }
    let out = stdout(&quill(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        dir.path(),
    ));
    assert!(out.contains("[rank 0] done: 6 iterations"), "{out}");
    assert!(out.contains("[rank 1] stopped after 6 iterations"), "{out}");
    // Each line names its rank once.
    assert!(out.contains("\n[rank 0] weights fingerprint "), "{out}");
    assert!(!out.contains("] rank "), "{out}");
    let sample = quill(
        &["sample", "--checkpoint", "l/best", "--max-new-tokens", "20"],
        dir.path(),
    );
    assert!(!stdout(&sample).is_empty());

    // A rank killed under launch: launch names it and stops the other.
    args.iter_mut().for_each(|a| {
        if a == "6" {
            *a = "100000".into();
        }
        if a == "l" {
            *a = "k".into();
        }
    });
    let mut launch = spawn_quill(dir.path(), &args);
    wait_for_steps(&dir.path().join("k/steps.jsonl"));
    let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", launch.id())).unwrap();
    let pids: Vec<i32> = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{children}");
    // The ranks start in order: the second is rank 1.
    Command::new("kill")
        .args(["-9", &pids[1].to_string()])
        .status()
        .unwrap();
    let out = rank0_exit(&mut launch, Duration::from_secs(20));
    assert_eq!(
        error_line(&out),
        "error: rank 1 was killed by signal 9 (SIGKILL); stopped the other ranks"
    );
}

#[test]
fn ctrl_c_under_launch_stops_every_rank_after_the_same_step_then_they_resume() {
    let dir = setup();
    let launch = |port: &str, train: Vec<String>| -> Vec<String> {
        let mut args: Vec<String> = ["launch", "--nproc", "2", "--coordinator", port, "--"]
            .map(String::from)
            .to_vec();
        args.extend(train);
        args
    };
    let long = run_args("100000", "100000", "c");
    let mut run = spawn_quill(dir.path(), &launch("127.0.0.1:29900", long));
    wait_for_steps(&dir.path().join("c/steps.jsonl"));
    Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .unwrap();
    let out = rank0_exit(&mut run, Duration::from_secs(30));
    // Stopped by Ctrl-C, checkpoint saved: 130, as a shell expects.
    assert_eq!(out.status.code(), Some(130), "{}", error_line(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stopped = |prefix: &str| -> usize {
        let at = text.find(prefix).expect(&text) + prefix.len();
        let digits: String = text[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    };
    let iter = stopped("[rank 0] stopped after ");
    assert_eq!(stopped("[rank 1] stopped after "), iter, "{text}");
    // The ranks' connections close without a panic.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("panicked"), "{said}");
    assert!(
        text.contains("resume with: quill train --resume c/last"),
        "{text}"
    );
    assert!(iter > 0 && iter < 100_000, "{text}");

    let target = (iter + 3).to_string();
    let resume = resume_args("c/last", &target);
    let out = stdout(&quill(
        &launch("127.0.0.1:29910", resume)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        dir.path(),
    ));
    assert!(
        out.contains(&format!("[rank 0] done: {target} iterations")),
        "{out}"
    );
    assert_eq!(step_losses(dir.path(), "c").len(), iter + 3);
}

#[test]
fn two_devices_in_one_process_train_the_model_of_one() {
    let dir = setup();
    let steps = ["--max-iters", "20", "--eval-interval", "10"];
    let run = |batch: &str, device: &str, out: &str| {
        let args: Vec<String> = train_args(batch, &[&steps[..], &["--out", out]].concat())
            .into_iter()
            .map(|a| if a == "flex" { device.to_string() } else { a })
            .collect();
        stdout(&quill(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            dir.path(),
        ))
    };
    run("12", "flex", "one");
    let out = run("6", "flex,flex", "two");
    let rank1 = out
        .lines()
        .find(|l| l.starts_with("rank 1: stopped after 20 iterations"));
    let rank0 = out
        .lines()
        .find(|l| l.starts_with("rank 0: weights fingerprint"));
    assert_eq!(
        fingerprint(rank0.expect(&out)),
        fingerprint(rank1.expect(&out))
    );
    same_training(dir.path(), "one", "two");
    // Other commands take one device.
    let line = error_line(&quill(
        &[
            "sample",
            "--checkpoint",
            "two/best",
            "--device",
            "flex,flex",
        ],
        dir.path(),
    ));
    assert_eq!(
        line,
        "error: --device lists 2 devices; only quill train uses several"
    );
}

/// The collective's protocol as a stranger, or a broken rank, speaks it: WebSocket
/// upgrades and frames over plain TCP on loopback, and its messages in msgpack (the
/// same shapes as burn-collective's, so they encode alike).
mod wire {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use serde::Serialize;

    #[derive(Serialize)]
    pub struct ClientId {
        pub id: u64,
    }

    #[derive(Serialize)]
    pub struct RequestId(pub u32);

    #[derive(Serialize)]
    pub struct Address {
        pub inner: String,
    }

    #[derive(Serialize)]
    #[allow(dead_code)] // Register keeps Finish's place among the variants
    pub enum RemoteRequest {
        Register {
            node_addr: Address,
            num_nodes: u32,
            peers: Vec<u32>,
        },
        Finish,
    }

    #[derive(Serialize)]
    pub enum CollectiveMessage {
        Init(ClientId),
        Request(RequestId, RemoteRequest),
    }

    /// Waits until something listens on `port`.
    pub fn wait_for_port(port: u16) {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(60), "port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks to open a WebSocket on `route` of `port`, proving `secret` if given: the
    /// HTTP status of the answer (101 when upgraded), and the connection.
    pub fn upgrade(port: u16, route: &str, secret: Option<&str>) -> (u16, TcpStream) {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let auth = secret.map_or(String::new(), |s| format!("Authorization: Bearer {s}\r\n"));
        write!(
            stream,
            "GET /{route} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
        (status.unwrap_or(0), stream)
    }

    /// Sends `payload` as one masked binary frame (as a client must).
    pub fn send(stream: &mut TcpStream, payload: &[u8]) {
        let mut frame = vec![0x82u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65_536 => {
                frame.push(0x80 | 126);
                frame.extend((n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend((n as u64).to_be_bytes());
            }
        }
        let mask = [0x5a, 0x17, 0xc3, 0x08];
        frame.extend(mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        stream.write_all(&frame).unwrap();
    }

    /// `message` in the collective's encoding.
    pub fn encode(message: &CollectiveMessage) -> Vec<u8> {
        rmp_serde::to_vec(message).unwrap()
    }

    /// burn-communication's data-service messages (the transfer id is a `u64`).
    #[derive(Serialize)]
    #[allow(dead_code)] // TensorRequest keeps Tensor's place among the variants
    pub enum DataServiceMessage {
        TensorRequest(u64),
        Tensor(burn::tensor::TensorData),
    }

    /// A rank that holds the run's secret but answers every tensor download with
    /// `tensor`: it registers with the orchestrator at `coordinator` as a node whose
    /// data service is `data_port`, and serves that port. The returned connections
    /// keep its connection open.
    pub fn fake_rank(
        coordinator: u16,
        data_port: u16,
        secret: &str,
        tensor: burn::tensor::TensorData,
    ) -> Vec<impl Sized> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", data_port)).unwrap();
        let answer = rmp_serde::to_vec(&DataServiceMessage::Tensor(tensor)).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let answer = answer.clone();
                std::thread::spawn(move || serve(stream, &answer));
            }
        });
        let connect = |route: &str| {
            use tungstenite::client::IntoClientRequest;
            let url = format!("ws://127.0.0.1:{coordinator}/{route}");
            let mut request = url.into_client_request().unwrap();
            let credentials = format!("Bearer {secret}").parse().unwrap();
            request.headers_mut().insert("authorization", credentials);
            tungstenite::connect(request).unwrap().0
        };
        let binary = |bytes: Vec<u8>| tungstenite::Message::binary(bytes);
        let init = || encode(&CollectiveMessage::Init(ClientId { id: 777_777 }));
        let mut responses = connect("response");
        responses.send(binary(init())).unwrap();
        let mut requests = connect("request");
        requests.send(binary(init())).unwrap();
        let register = RemoteRequest::Register {
            node_addr: Address {
                inner: format!("ws://127.0.0.1:{data_port}"),
            },
            num_nodes: 2,
            peers: vec![1],
        };
        let message = CollectiveMessage::Request(RequestId(0), register);
        requests.send(binary(encode(&message))).unwrap();
        vec![responses, requests]
    }

    /// One connection to the fake rank's data service: every message on `/data` gets
    /// `answer`; barriers (`/sync`) and probes get nothing.
    #[allow(clippy::result_large_err)] // tungstenite's handshake callback returns its error type
    fn serve(stream: TcpStream, answer: &[u8]) {
        let mut route = String::new();
        let accepted = tungstenite::accept_hdr(
            stream,
            |request: &tungstenite::handshake::server::Request, response| {
                route = request.uri().path().to_string();
                Ok(response)
            },
        );
        let Ok(mut ws) = accepted else {
            return;
        };
        while let Ok(message) = ws.read() {
            if route == "/data" && message.is_binary() {
                let sent = ws.send(tungstenite::Message::binary(answer.to_vec()));
                if sent.is_err() {
                    return;
                }
            }
        }
    }

    /// The addresses (`a.b.c.d`) that listen on `port`, from /proc/net/tcp.
    pub fn listening_on(port: u16) -> Vec<String> {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (addr, state) = (fields.get(1)?, fields.get(3)?);
                let (ip, p) = addr.split_once(':')?;
                let listening = *state == "0A" && u16::from_str_radix(p, 16).ok()? == port;
                let ip = u32::from_str_radix(ip, 16).ok()?.to_le_bytes();
                listening.then(|| format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]))
            })
            .collect()
    }
}

/// The 2-rank run these tests disturb: 4 rows per rank, 20 steps, into `out`.
fn disturbed_args(out: &str) -> Vec<String> {
    train_args(
        "4",
        &["--max-iters", "20", "--eval-interval", "10", "--out", out],
    )
}

/// The same 2-rank run undisturbed, coordinated at `port`, into `out`: the weights a
/// disturbed run must end with, bit for bit (the exchange is deterministic).
fn reference_run(dir: &Path, out: &str, port: u16) {
    let [out0, out1] = two_ranks(dir, &disturbed_args(out), port);
    stdout(&out0);
    stdout(&out1);
}

/// Strangers on the network, without the run's secret (or with a wrong one), are
/// refused on every port and route, before anything is served: they cannot take a
/// rank's gradient or register. Nothing listens beyond loopback. The run finishes with
/// the weights of the same run undisturbed.
#[test]
fn strangers_are_refused_everywhere_and_the_run_finishes_with_the_right_weights() {
    let dir = setup();
    reference_run(dir.path(), "one", 29920);
    let port = 29930;
    let args = disturbed_args("two");
    let ranks = [0, 1].map(|r| spawn_rank(dir.path(), &args, 2, r, port));
    // The orchestrator's routes on the coordinator's port, the data service's on each
    // rank's.
    let ports = [
        (port, ["request", "response"]),
        (port + 1, ["data", "sync"]),
        (port + 2, ["data", "sync"]),
    ];
    for (p, _) in ports {
        wire::wait_for_port(p);
    }
    let wrong = "0123456789abcdef-test-secreX";
    for (p, routes) in ports {
        assert_eq!(wire::listening_on(p), ["127.0.0.1"], "port {p}");
        for route in routes {
            for secret in [None, Some(wrong)] {
                let (status, _) = wire::upgrade(p, route, secret);
                assert_eq!(status, 401, "port {p} /{route} with {secret:?}");
            }
        }
        // Bytes that are not HTTP at all: the connection is dropped or answered 400.
        let mut garbage = std::net::TcpStream::connect(("127.0.0.1", p)).unwrap();
        use std::io::{Read, Write};
        garbage.write_all(&[0xff; 4096]).unwrap();
        garbage
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = Vec::new();
        let _ = garbage.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{answer}"
        );
    }
    let [out0, out1] = ranks.map(|r| r.wait_with_output().unwrap());
    assert!(stdout(&out0).contains("done: 20 iterations"));
    stdout(&out1);
    assert_eq!(weights(dir.path(), "one"), weights(dir.path(), "two"));
    // Each refusal is reported by the rank that refused it.
    let stderr = String::from_utf8_lossy(&out0.stderr);
    let refused = "warning: refused a connection to /request from 127.0.0.1:";
    assert!(stderr.contains(refused), "{stderr}");
    assert!(
        stderr.contains("it did not prove the run's secret"),
        "{stderr}"
    );
}

/// A client that holds the secret but misbehaves (a broken rank): it starts a conversation
/// and asks twice to finish without ever reading the answers, opens one client's
/// responses twice, and sends garbage on every route. Each of its connections fails
/// alone; the orchestrator still serves the real ranks, which finish with the weights
/// of the same run undisturbed.
#[test]
fn a_misbehaving_client_neither_wedges_the_orchestrator_nor_crashes_a_rank() {
    let dir = setup();
    reference_run(dir.path(), "one", 29950);
    let port = 29940;
    let args = disturbed_args("two");
    let rank0 = spawn_rank(dir.path(), &args, 2, 0, port);
    wire::wait_for_port(port);
    let mut held = Vec::new();
    let (status, mut idle) = wire::upgrade(port, "request", Some(SECRET));
    assert_eq!(status, 101);
    let init = || wire::CollectiveMessage::Init(wire::ClientId { id: 424_242 });
    wire::send(&mut idle, &wire::encode(&init()));
    for id in [1, 2, 3] {
        let finish =
            wire::CollectiveMessage::Request(wire::RequestId(id), wire::RemoteRequest::Finish);
        wire::send(&mut idle, &wire::encode(&finish));
    }
    held.push(idle);
    for _ in 0..2 {
        let (status, mut responses) = wire::upgrade(port, "response", Some(SECRET));
        assert_eq!(status, 101);
        wire::send(&mut responses, &wire::encode(&init()));
        held.push(responses);
    }
    for route in ["request", "response"] {
        let (status, mut garbage) = wire::upgrade(port, route, Some(SECRET));
        assert_eq!(status, 101);
        wire::send(&mut garbage, b"\xc1\xff not msgpack");
        held.push(garbage);
    }
    let rank1 = spawn_rank(dir.path(), &args, 2, 1, port);
    for p in [port + 1, port + 2] {
        wire::wait_for_port(p);
        for route in ["data", "sync"] {
            let (status, mut garbage) = wire::upgrade(p, route, Some(SECRET));
            assert_eq!(status, 101, "port {p} /{route}");
            wire::send(&mut garbage, b"\xc1\xff not msgpack");
            held.push(garbage);
        }
    }
    let [out0, out1] = [rank0, rank1].map(|r| r.wait_with_output().unwrap());
    assert!(stdout(&out0).contains("done: 20 iterations"));
    stdout(&out1);
    assert_eq!(weights(dir.path(), "one"), weights(dir.path(), "two"));
    drop(held);
}

/// A rank started by hand without the run's secret does not join; a secret too short
/// to protect anything is refused.
#[test]
fn a_rank_without_the_secret_is_refused() {
    let dir = setup();
    let args = train_args("4", &["--max-iters", "2", "--out", "s"]);
    let mut with_world = args.clone();
    with_world.extend(
        [
            "--world-size",
            "2",
            "--rank",
            "1",
            "--coordinator",
            "127.0.0.1:29990",
        ]
        .map(String::from),
    );
    let out = spawn_quill(dir.path(), &with_world)
        .wait_with_output()
        .unwrap();
    assert_eq!(
        error_line(&out),
        "error: a run of several processes needs its secret: `quill launch` makes one; ranks started by hand read it from QUILL_SECRET or --secret-file FILE"
    );
    fs::write(dir.path().join("short"), "abc\n").unwrap();
    with_world.extend(["--secret-file".to_string(), "short".to_string()]);
    let out = spawn_quill(dir.path(), &with_world)
        .wait_with_output()
        .unwrap();
    assert_eq!(
        error_line(&out),
        "error: the run's secret must be at least 16 visible ASCII characters, without spaces"
    );
}

/// SIGTERM and SIGHUP to `quill launch` stop its ranks as Ctrl-C does (a checkpoint,
/// then every rank ends): none is left running.
#[test]
fn sigterm_or_sighup_to_launch_leaves_no_rank_running() {
    let dir = setup();
    for (signal, port, out) in [
        ("-TERM", "127.0.0.1:29960", "t"),
        ("-HUP", "127.0.0.1:29970", "h"),
    ] {
        let mut args: Vec<String> = ["launch", "--nproc", "2", "--coordinator", port, "--"]
            .map(String::from)
            .to_vec();
        args.extend(run_args("100000", "100000", out));
        let mut run = spawn_quill(dir.path(), &args);
        wait_for_steps(&dir.path().join(out).join("steps.jsonl"));
        let children =
            fs::read_to_string(format!("/proc/{0}/task/{0}/children", run.id())).unwrap();
        let pids: Vec<String> = children.split_whitespace().map(String::from).collect();
        assert_eq!(pids.len(), 2, "{children}");
        Command::new("kill")
            .args([signal, &run.id().to_string()])
            .status()
            .unwrap();
        let out = rank0_exit(&mut run, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(130), "{signal}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("[rank 0] stopped after "), "{signal}: {text}");
        for pid in pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "{signal}: rank {pid} still runs"
            );
        }
    }
}

/// A rank holding the secret that sends a tensor whose bytes do not fit its shape, or
/// one larger than the model: the rank that downloads it stops with one error line
/// (burn-collective's download panicked on the first and took any size).
#[test]
fn a_tensor_that_does_not_fit_stops_the_rank_that_receives_it() {
    use burn::tensor::{Shape, TensorData};
    let dir = setup();
    let mut short = TensorData::new(vec![1.0f32; 5], [5]);
    short.shape = Shape::new([6]);
    // 4 MiB of values: far more than the tiny model's parameters.
    let huge = TensorData::new(vec![1.0f32; 1 << 20], [1 << 20]);
    for (case, port, tensor) in [("short", 30_000, short), ("huge", 30_010, huge)] {
        let args = train_args("4", &["--max-iters", "4", "--out", case]);
        let mut rank0 = spawn_rank(dir.path(), &args, 2, 0, port);
        wire::wait_for_port(port);
        let rank = wire::fake_rank(port, port + 2, SECRET, tensor);
        let out = rank0_exit(&mut rank0, Duration::from_secs(60));
        let line = error_line(&out);
        // The download failed as if the peer were gone (which node the fake rank is
        // depends on who registered first).
        let lost = "error: all-reduce failed: Global(PeerLost(NodeId(";
        assert!(line.starts_with(lost), "{case}: {line}");
        drop(rank);
    }
}

/// A stranger without the secret holds thousands of idle connections to every port of
/// a data-parallel run: the run finishes with the weights of the same run undisturbed,
/// and the refusals take a few lines of the log, not thousands.
#[test]
fn a_flood_of_idle_connections_leaves_the_run_undisturbed() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the one struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    let dir = setup();
    let args = |out: &str| {
        train_args(
            "4",
            &["--max-iters", "400", "--eval-interval", "200", "--out", out],
        )
    };
    let [ref0, ref1] = two_ranks(dir.path(), &args("one"), 29960);
    stdout(&ref0);
    stdout(&ref1);
    let port = 29970;
    // The ranks may open 1,024 files, as on many machines: more idle connections than
    // that would exhaust them if each were kept.
    let ranks = [0, 1].map(|rank| {
        let mut args = args("two");
        args.extend(["--world-size", "2", "--rank", &rank.to_string()].map(String::from));
        args.extend(["--coordinator".into(), format!("127.0.0.1:{port}")]);
        let mut command = Command::new(env!("CARGO_BIN_EXE_quill"));
        command
            .args(&args)
            .current_dir(dir.path())
            .env_remove("RUST_BACKTRACE")
            .env("QUILL_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        use std::os::unix::process::CommandExt;
        // SAFETY: only setrlimit, which is async-signal-safe, runs in the child.
        unsafe {
            command.pre_exec(|| {
                let files = libc::rlimit {
                    rlim_cur: 1024,
                    rlim_max: 1024,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &files);
                Ok(())
            });
        }
        command.spawn().expect("quill starts")
    });
    for p in [port, port + 1, port + 2] {
        wire::wait_for_port(p);
    }
    let flood = (limit.rlim_cur as usize).saturating_sub(500).min(3000);
    let mut held = Vec::new();
    for i in 0..flood {
        let p = port + (i % 3) as u16;
        if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", p)) {
            held.push(stream);
        }
    }
    let [out0, out1] = ranks.map(|r| r.wait_with_output().unwrap());
    let stdout0 = stdout(&out0);
    assert!(stdout0.contains("done: 400 iterations"), "{stdout0}");
    stdout(&out1);
    eprintln!("{} connections held during the run", held.len());
    drop(held);
    assert_eq!(weights(dir.path(), "one"), weights(dir.path(), "two"));
    let stderr = String::from_utf8_lossy(&out0.stderr);
    let warnings = stderr.matches("warning: refused").count();
    assert!(warnings < 20, "{warnings} warning lines:\n{stderr}");
}
