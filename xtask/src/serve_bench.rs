//! `cargo xtask bench-serve [--tokens N] [--gpt2-tokens N]`: `quill serve` under 1, 4
//! and 16 concurrent streaming clients, on the `cpu` preset's model and on a GPT-2
//! 124M-shaped one.
//!
//! For each model one server (`--max-batch 16`, `--device cpu`) answers the same 16
//! requests — 4 prompts, greedy and sampled, each with its own seed — three times:
//! one client sending them one after another (every request alone), then 4 clients,
//! then 16, each client sending its share in turn. Reported per concurrency: the
//! aggregate generated tokens/s (all completion tokens over the wall time) and the time
//! to first token of each request (p50, p95); and whether every request's text was the
//! same as alone. The `cpu` model is trained for 100 steps first (the speed does not
//! depend on the weights, the text check wants a model that says something); the
//! GPT-2-shaped one is `bench-gpt2`'s (`target/gpt2-bench/ck124`, made with it).
//!
//! The client is a plain HTTP/1.1 client over `std::net` reading the server-sent
//! events, one thread per client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

const DIR: &str = "target/serve-bench";
const QUILL: &str = "target/release/quill";
const PROMPTS: [&str; 4] = ["ROMEO:", "First Citizen:\n", "KING RICHARD III:\n", "O"];

pub fn run(args: &[&str]) -> Result<()> {
    let (mut tokens, mut gpt2_tokens) = (200usize, 48usize);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match *arg {
            "--tokens" => tokens = it.next().context("--tokens N")?.parse()?,
            "--gpt2-tokens" => gpt2_tokens = it.next().context("--gpt2-tokens N")?.parse()?,
            _ => bail!("usage: cargo xtask bench-serve [--tokens N] [--gpt2-tokens N]"),
        }
    }
    crate::cargo(&["build", "--release", "-p", "quill-cli"])?;
    std::fs::create_dir_all(DIR)?;
    let corpus = std::env::var("QUILL_SHAKESPEARE")
        .unwrap_or_else(|_| "../shared/data/tinyshakespeare.txt".into());
    let cpu = format!("{DIR}/cpu");
    if !Path::new(&cpu).join("best").exists() {
        crate::timed(
            QUILL,
            &[
                "train",
                "--preset",
                "cpu",
                "--data",
                &corpus,
                "--out",
                &cpu,
                "--max-iters",
                "100",
                "--eval-interval",
                "100",
                "--sample-tokens",
                "0",
            ],
            Path::new("."),
        )?;
    }
    let gpt2 = "target/gpt2-bench/ck124";
    let mut report = format!("{}\n", crate::bench::machine()?);
    report += "| model | clients | requests | tokens | wall (s) | aggregate tokens/s | × 1 client | TTFT p50 (ms) | TTFT p95 (ms) | same text as alone |\n|---|---|---|---|---|---|---|---|---|---|\n";
    report += &model_rows("cpu preset (0.8 M)", &format!("{cpu}/best"), tokens)?;
    match Path::new(gpt2).join("config.json").exists() || Path::new(gpt2).exists() {
        true => report += &model_rows("GPT-2 124M shapes", gpt2, gpt2_tokens)?,
        false => eprintln!("{gpt2} is missing: run cargo xtask bench-gpt2 once to make it"),
    }
    println!("{report}");
    Ok(())
}

/// The three concurrencies on one model.
fn model_rows(name: &str, checkpoint: &str, tokens: usize) -> Result<String> {
    let server = Server::start(checkpoint)?;
    let requests: Vec<Value> = (0..16u64)
        .map(|i| {
            json!({
                "model": checkpoint,
                "prompt": PROMPTS[i as usize % 4],
                "max_tokens": tokens,
                "temperature": if i % 4 == 3 { 0.0 } else { 0.8 },
                "seed": i,
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        })
        .collect();
    // A warm-up request: the first pass allocates what later ones reuse.
    server.stream(&requests[0])?;
    let mut rows = String::new();
    let mut alone: Vec<String> = Vec::new();
    let mut single = 0.0;
    for clients in [1usize, 4, 16] {
        let started = Instant::now();
        let results: Vec<Result<Vec<(usize, Completion)>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let (server, requests) = (&server, &requests);
                    scope.spawn(move || {
                        (c..requests.len())
                            .step_by(clients)
                            .map(|i| server.stream(&requests[i]).map(|done| (i, done)))
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect()
        });
        let wall = started.elapsed().as_secs_f64();
        let mut done: Vec<(usize, Completion)> = Vec::new();
        for r in results {
            done.extend(r?);
        }
        done.sort_by_key(|(i, _)| *i);
        let total: usize = done.iter().map(|(_, c)| c.tokens).sum();
        let rate = total as f64 / wall;
        let texts: Vec<String> = done.iter().map(|(_, c)| c.text.clone()).collect();
        let same = match clients {
            1 => {
                alone = texts;
                single = rate;
                "(the reference)".to_string()
            }
            _ => {
                let equal = texts.iter().zip(&alone).filter(|(a, b)| a == b).count();
                format!("{equal} of {}", texts.len())
            }
        };
        let mut ttft: Vec<f64> = done.iter().map(|(_, c)| c.first_token_ms).collect();
        ttft.sort_by(f64::total_cmp);
        let pct = |p: f64| ttft[((ttft.len() - 1) as f64 * p).round() as usize];
        rows += &format!(
            "| {name} | {clients} | {} | {total} | {wall:.2} | {rate:.1} | {:.2}× | {:.0} | {:.0} | {same} |\n",
            done.len(),
            rate / single,
            pct(0.5),
            pct(0.95),
        );
        eprintln!("{name}, {clients} clients: {rate:.1} tokens/s");
    }
    Ok(rows)
}

/// One streamed completion.
struct Completion {
    text: String,
    tokens: usize,
    first_token_ms: f64,
}

/// A `quill serve` on a free port, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(checkpoint: &str) -> Result<Server> {
        let mut child = Command::new(QUILL)
            .args([
                "serve",
                "--checkpoint",
                checkpoint,
                "--port",
                "0",
                "--device",
                "cpu",
                "--max-batch",
                "16",
            ])
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stderr = BufReader::new(child.stderr.take().context("stderr")?);
        let mut line = String::new();
        let port = loop {
            line.clear();
            if stderr.read_line(&mut line)? == 0 {
                bail!("quill serve stopped before listening");
            }
            if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                break digits.parse()?;
            }
        };
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Ok(Server { child, port })
    }

    /// Sends one streaming completion request and reads it to `[DONE]`.
    fn stream(&self, request: &Value) -> Result<Completion> {
        let body = request.to_string();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(600)))?;
        let started = Instant::now();
        write!(
            stream,
            "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if !line.contains(" 200 ") {
            bail!("quill serve answered {}", line.trim());
        }
        while {
            line.clear();
            reader.read_line(&mut line)?;
            !line.trim().is_empty()
        } {}
        // The chunked body, event by event.
        let (mut text, mut tokens, mut first) = (String::new(), 0, None);
        let mut pending = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16).context("chunk size")?;
            if size == 0 {
                break;
            }
            let mut data = vec![0; size + 2];
            reader.read_exact(&mut data)?;
            pending.push_str(std::str::from_utf8(&data[..size])?);
            while let Some(end) = pending.find("\n\n") {
                let event: String = pending.drain(..end + 2).collect();
                let Some(data) = event.trim().strip_prefix("data: ") else {
                    continue;
                };
                if data == "[DONE]" {
                    continue;
                }
                let chunk: Value = serde_json::from_str(data)?;
                if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
                    tokens = n as usize;
                }
                if let Some(piece) = chunk["choices"][0]["text"].as_str()
                    && !piece.is_empty()
                {
                    first.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1e3);
                    text.push_str(piece);
                }
            }
        }
        Ok(Completion {
            text,
            tokens,
            first_token_ms: first.unwrap_or(f64::NAN),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
