//! `quill serve` over real HTTP on loopback: completions equal `quill sample`, streamed
//! or not, alone or in a batch; `n`, stop strings, a client that goes away, the error
//! answers, and shutdown that finishes what it accepted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;
use common::{TINY_MODEL, error_line, quill, stdout};

/// A tiny model trained for a few steps, once for every test here.
fn checkpoint() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let verse = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n";
        std::fs::write(dir.path().join("corpus.txt"), verse.repeat(50)).unwrap();
        let mut args = vec!["train", "--data", "corpus.txt", "--out", "run"];
        args.extend_from_slice(TINY_MODEL);
        args.extend_from_slice(&["--max-iters", "30", "--eval-interval", "30", "--eval-iters", "1", "--final-eval-iters", "1", "--sample-tokens", "0"]);
        stdout(&quill(&args, dir.path()));
        let ck = dir.path().join("run/best");
        (dir, ck)
    })
    .1
}

/// A running `quill serve` on a free port, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    model: String,
    /// What the server printed before it listened.
    startup: String,
    /// What it printed after (the request log).
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let ck = checkpoint();
        let mut child = Command::new(env!("CARGO_BIN_EXE_quill"))
            .args(["serve", "--checkpoint"])
            .arg(ck)
            .args(["--port", "0", "--device", "cpu"])
            .args(extra)
            .env_remove("QUILL_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let mut startup = String::new();
        let port = loop {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "the server stopped"
            );
            startup.push_str(&line);
            if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                break rest
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
            }
        };
        // Keep draining stderr so the server never blocks on it; the log is kept.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stderr, &mut buffer) {
                kept.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Server {
            child,
            port,
            model: ck.display().to_string(),
            startup,
            log,
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        stream
    }

    /// Sends a request; returns the connection, positioned at the body.
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut stream = self.connect();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        Response::read_head(stream)
    }

    fn post(&self, path: &str, body: &Value) -> Response {
        self.send(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    /// A completion request with this server's model and `fields`.
    fn complete(&self, fields: Value) -> Response {
        let mut body = json!({"model": self.model});
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        self.post("/v1/completions", &body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response being read.
struct Response {
    status: u16,
    chunked: bool,
    reader: BufReader<TcpStream>,
}

impl Response {
    fn read_head(stream: TcpStream) -> Response {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut chunked = false;
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            chunked |= line
                .to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked");
        }
        Response {
            status,
            chunked,
            reader,
        }
    }

    /// The next piece of the body; `None` at its end.
    fn piece(&mut self) -> Option<Vec<u8>> {
        if !self.chunked {
            let mut all = Vec::new();
            self.reader.read_to_end(&mut all).unwrap();
            self.chunked = true; // one piece, then the end
            return (!all.is_empty()).then_some(all);
        }
        let mut line = String::new();
        if self.reader.read_line(&mut line).unwrap() == 0 {
            return None;
        }
        let size = usize::from_str_radix(line.trim(), 16).unwrap();
        if size == 0 {
            return None;
        }
        let mut data = vec![0; size + 2];
        self.reader.read_exact(&mut data).unwrap();
        data.truncate(size);
        Some(data)
    }

    fn body(mut self) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(piece) = self.piece() {
            all.extend(piece);
        }
        all
    }

    fn json(self) -> (u16, Value) {
        let status = self.status;
        (status, serde_json::from_slice(&self.body()).unwrap())
    }

    /// The server-sent events' data lines, in order, up to and with `[DONE]`.
    fn events(mut self) -> Vec<String> {
        assert_eq!(self.status, 200);
        let mut text = String::new();
        let mut events = Vec::new();
        while let Some(piece) = self.piece() {
            text.push_str(&String::from_utf8(piece).unwrap());
            while let Some(end) = text.find("\n\n") {
                let event: String = text[..end].to_string();
                text.drain(..end + 2);
                events.extend(
                    event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data: "))
                        .map(str::to_string),
                );
            }
        }
        events
    }
}

/// The text of each choice of a streamed completion, its finish reasons and usage.
fn streamed(events: &[String]) -> (Vec<String>, Vec<String>, Option<Value>) {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let mut texts: Vec<String> = Vec::new();
    let mut finishes: Vec<String> = Vec::new();
    let mut usage = None;
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        assert_eq!(chunk["object"], "text_completion");
        if !chunk["usage"].is_null() {
            usage = Some(chunk["usage"].clone());
        }
        for choice in chunk["choices"].as_array().unwrap() {
            let i = choice["index"].as_u64().unwrap() as usize;
            if texts.len() <= i {
                texts.resize(i + 1, String::new());
                finishes.resize(i + 1, String::new());
            }
            texts[i].push_str(choice["text"].as_str().unwrap());
            if let Some(f) = choice["finish_reason"].as_str() {
                finishes[i] = f.to_string();
            }
        }
    }
    (texts, finishes, usage)
}

fn texts(response: &Value) -> Vec<String> {
    response["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect()
}

/// `quill sample`'s continuations of `prompt` (without the prompt).
fn sample(
    prompt: &str,
    tokens: usize,
    temperature: &str,
    seed: &str,
    extra: &[&str],
) -> Vec<String> {
    let ck = checkpoint().display().to_string();
    let tokens = tokens.to_string();
    let mut args = vec![
        "sample",
        "--checkpoint",
        &ck,
        "--device",
        "cpu",
        "--prompt",
        prompt,
        "--max-new-tokens",
        &tokens,
        "--temperature",
        temperature,
        "--seed",
        seed,
    ];
    args.extend_from_slice(extra);
    let out = stdout(&quill(&args, Path::new(".")));
    if !extra.contains(&"--num-samples") {
        let text = out.strip_prefix(prompt).unwrap();
        return vec![text.strip_suffix('\n').unwrap().to_string()];
    }
    out.split("\n---------------\n")
        .filter(|s| !s.is_empty())
        .map(|s| s.strip_prefix(prompt).unwrap().to_string())
        .collect()
}

#[test]
fn completions_equal_quill_sample() {
    let server = Server::start(&["--max-batch", "4"]);
    for (temperature, seed) in [("0", "1"), ("0.8", "7"), ("1.3", "99")] {
        let expected = sample("Speak", 40, temperature, seed, &[]);
        let fields = json!({"prompt": "Speak", "max_tokens": 40,
            "temperature": temperature.parse::<f64>().unwrap(), "seed": seed.parse::<u64>().unwrap()});
        let (status, whole) = server.complete(fields.clone()).json();
        assert_eq!(status, 200, "{whole}");
        assert_eq!(texts(&whole), expected, "temperature {temperature}");
        assert_eq!(whole["choices"][0]["finish_reason"], "length");
        assert_eq!(
            whole["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 40, "total_tokens": 45})
        );

        let mut fields = fields;
        fields["stream"] = json!(true);
        fields["stream_options"] = json!({"include_usage": true});
        let (texts, finishes, usage) = streamed(&server.complete(fields).events());
        assert_eq!((texts, finishes), (expected, vec!["length".to_string()]));
        assert_eq!(usage.unwrap()["completion_tokens"], 40);
    }
    // Penalties and min_p: quill sample's flags of the same names, greedy and sampled.
    let flags = [
        "--repetition-penalty",
        "1.5",
        "--frequency-penalty",
        "0.7",
        "--presence-penalty",
        "-0.2",
        "--min-p",
        "0.05",
    ];
    for (temperature, seed) in [("0", "1"), ("0.8", "7")] {
        let expected = sample("Speak", 40, temperature, seed, &flags);
        assert_ne!(expected, sample("Speak", 40, temperature, seed, &[]));
        let (status, whole) = server
            .complete(
                json!({"prompt": "Speak", "max_tokens": 40, "seed": seed.parse::<u64>().unwrap(),
                "temperature": temperature.parse::<f64>().unwrap(), "repetition_penalty": 1.5,
                "frequency_penalty": 0.7, "presence_penalty": -0.2, "min_p": 0.05}),
            )
            .json();
        assert_eq!(status, 200, "{whole}");
        assert_eq!(
            texts(&whole),
            expected,
            "penalised, temperature {temperature}"
        );
    }
    // n completions: quill sample's --num-samples, one generator for the group.
    let expected = sample("All:", 30, "0.9", "5", &["--num-samples", "3"]);
    let (_, whole) = server
        .complete(
            json!({"prompt": "All:", "max_tokens": 30, "temperature": 0.9, "seed": 5, "n": 3}),
        )
        .json();
    assert_eq!(texts(&whole), expected);
    assert_eq!(whole["usage"]["completion_tokens"], 90);
    // A list of prompts: n choices each, in order, each prompt with the request's seed.
    let (_, whole) = server
        .complete(json!({"prompt": ["All:", "Speak"], "max_tokens": 30, "temperature": 0.9, "seed": 5, "n": 2, "echo": true}))
        .json();
    let first = sample("All:", 30, "0.9", "5", &["--num-samples", "2"]);
    let second = sample("Speak", 30, "0.9", "5", &["--num-samples", "2"]);
    let echoed: Vec<String> = first
        .iter()
        .map(|t| format!("All:{t}"))
        .chain(second.iter().map(|t| format!("Speak{t}")))
        .collect();
    assert_eq!(texts(&whole), echoed);
    assert_eq!(whole["usage"]["prompt_tokens"], 4 + 5);
}

#[test]
fn stop_strings_end_a_choice_before_the_stop() {
    let server = Server::start(&[]);
    let full = sample("Speak", 60, "1.0", "3", &[]).remove(0);
    // Two characters the text has: a stop that is surely reached.
    let stop: String = full.chars().skip(3).take(2).collect();
    let at = full.find(&stop).unwrap();
    let cut = sample("Speak", 60, "1.0", "3", &["--stop", &stop]).remove(0);
    assert_eq!(
        cut,
        &full[..at + stop.len()],
        "quill sample keeps its stop text"
    );
    for stream in [false, true] {
        let fields = json!({"prompt": "Speak", "max_tokens": 60, "temperature": 1.0, "seed": 3,
            "stop": ["never-there", stop], "stream": stream});
        let response = server.complete(fields);
        let (text, finish) = match stream {
            false => {
                let (_, whole) = response.json();
                (
                    texts(&whole).remove(0),
                    whole["choices"][0]["finish_reason"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            }
            true => {
                let (mut texts, mut finishes, _) = streamed(&response.events());
                (texts.remove(0), finishes.remove(0))
            }
        };
        assert_eq!(
            (text.as_str(), finish.as_str()),
            (&full[..at], "stop"),
            "stream {stream}"
        );
    }
}

#[test]
fn concurrent_requests_get_the_text_they_get_alone() {
    let server = Server::start(&["--max-batch", "5"]);
    let request = |i: u64| {
        let prompt = ["Speak", "All:", "Before", "F"][i as usize % 4];
        json!({"prompt": prompt, "max_tokens": 25 + 5 * i,
            "temperature": if i.is_multiple_of(3) { 0.0 } else { 0.9 }, "top_k": 10, "seed": i, "stream": i.is_multiple_of(2)})
    };
    let text_of = |response: Response, stream: bool| match stream {
        true => streamed(&response.events()).0.remove(0),
        false => texts(&response.json().1).remove(0),
    };
    let alone: Vec<String> = (0..8)
        .map(|i| text_of(server.complete(request(i)), i % 2 == 0))
        .collect();
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let server = &server;
                scope.spawn(move || text_of(server.complete(request(i)), i % 2 == 0))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);
}

#[test]
fn a_client_that_leaves_frees_its_place_at_once() {
    let server = Server::start(&["--max-batch", "1", "--max-tokens-limit", "10000000"]);
    let mut endless =
        server.complete(json!({"prompt": "Speak", "max_tokens": 10_000_000, "stream": true}));
    assert_eq!(endless.status, 200);
    assert!(endless.piece().is_some());
    drop(endless);
    let started = Instant::now();
    let (status, whole) = server
        .complete(json!({"prompt": "All:", "max_tokens": 5}))
        .json();
    assert_eq!((status, texts(&whole)[0].chars().count()), (200, 5));
    // Ten million tokens would take hours; the place came free at the next step.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn bad_requests_get_openai_errors() {
    let server = Server::start(&["--max-tokens-limit", "100"]);
    let error = |response: Response| {
        let (status, body) = response.json();
        (
            status,
            body["error"]["type"].as_str().unwrap().to_string(),
            body["error"]["param"].clone(),
        )
    };
    let invalid = |param: Value| (400, "invalid_request_error".to_string(), param);
    let json_type = [("Content-Type", "application/json")];
    let send_raw = |body: &[u8]| server.send("POST", "/v1/completions", &json_type, body);
    assert_eq!(error(send_raw(b"{\"model\": ")), invalid(Value::Null));
    assert_eq!(
        error(server.complete(json!({"prompt": "a", "max_tokens": "many"}))),
        invalid(json!("max_tokens"))
    );
    assert_eq!(
        error(server.complete(json!({"prompt": "Speak", "max_tokens": 101}))),
        invalid(json!("max_tokens"))
    );
    assert_eq!(
        error(server.complete(json!({"prompt": ""}))),
        invalid(json!("prompt"))
    );
    assert_eq!(
        error(server.complete(json!({"prompt": "Speak Ω"}))),
        invalid(json!("prompt"))
    );
    assert_eq!(
        error(server.complete(json!({"prompt": "a", "temperature": [1]}))),
        invalid(json!("temperature"))
    );
    assert_eq!(
        error(server.complete(json!({"prompt": "a", "n": 17}))),
        invalid(json!("n"))
    );
    let (status, body) = server.complete(json!({"prompt": "Speak Ω"})).json();
    assert_eq!(
        (status, body["error"]["message"].as_str().unwrap()),
        (400, "character 'Ω' at position 6 is not in the vocabulary")
    );
    // Too large a body, an unknown model, chat, an unknown path.
    let big = vec![b' '; 2 << 20];
    assert_eq!(send_raw(&big).status, 413);
    let (status, body) = server
        .post("/v1/completions", &json!({"model": "gpt-4", "prompt": "a"}))
        .json();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("this server serves 'run'"),
        "{body}"
    );
    // The run's name (the default --model-name) and the checkpoint's path both name it.
    for model in ["run", server.model.as_str()] {
        let body = json!({"model": model, "prompt": "a", "max_tokens": 1});
        assert_eq!(
            server.post("/v1/completions", &body).json().0,
            200,
            "{model}"
        );
    }
    let (status, body) = server
        .post("/v1/chat/completions", &json!({"model": server.model}))
        .json();
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/completions"),
        "{body}"
    );
    assert_eq!(server.send("GET", "/nowhere", &[], b"").status, 404);
    // The server still answers.
    let (status, _) = server
        .complete(json!({"prompt": "a", "max_tokens": 2}))
        .json();
    assert_eq!(status, 200);
}

#[test]
fn an_api_key_guards_everything_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    std::fs::write(&file, "s3cret\n").unwrap();
    let server = Server::start(&["--api-key-file", file.to_str().unwrap()]);
    let get = |path: &str, key: Option<&str>| {
        let header = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = header
            .iter()
            .map(|h| ("Authorization", h.as_str()))
            .collect();
        server.send("GET", path, &headers, b"").status
    };
    assert_eq!(get("/v1/models", None), 401);
    assert_eq!(get("/v1/models", Some("wrong")), 401);
    assert_eq!(get("/v1/models", Some("s3cret")), 200);
    assert_eq!(get("/health", None), 200);
    let (status, body) = server.complete(json!({"prompt": "a"})).json();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let body = json!({"model": server.model, "prompt": "All:", "max_tokens": 3}).to_string();
    let ok = server.send(
        "POST",
        "/v1/completions",
        &[("Authorization", "Bearer s3cret")],
        body.as_bytes(),
    );
    assert_eq!(ok.status, 200);
    // Listening beyond loopback needs a key.
    let ck = checkpoint().display().to_string();
    let line = error_line(&quill(
        &[
            "serve",
            "--checkpoint",
            &ck,
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ],
        Path::new("."),
    ));
    assert!(line.contains("--api-key"), "{line}");
}

#[test]
fn a_full_queue_answers_503() {
    let server = Server::start(&[
        "--max-batch",
        "1",
        "--max-queue",
        "1",
        "--max-tokens-limit",
        "10000000",
    ]);
    let mut busy =
        server.complete(json!({"prompt": "Speak", "max_tokens": 10_000_000, "stream": true}));
    assert!(busy.piece().is_some());
    // A stream's head comes back once it is queued: this one waits for the place.
    let queued = server.complete(json!({"prompt": "All:", "max_tokens": 3, "stream": true}));
    assert_eq!(queued.status, 200);
    let (status, body) = server
        .complete(json!({"prompt": "F", "max_tokens": 3}))
        .json();
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (503, Some("server_error")),
        "{body}"
    );
    assert_eq!(body["error"]["code"], "server_overloaded");
    drop(busy);
    let (texts, finishes, _) = streamed(&queued.events());
    assert_eq!(
        (texts[0].chars().count(), finishes[0].as_str()),
        (3, "length")
    );
}

#[test]
fn shutdown_finishes_the_requests_in_progress() {
    let mut server = Server::start(&["--max-tokens-limit", "20000"]);
    let request = json!({"prompt": "Speak", "max_tokens": 20000, "stream": true, "seed": 4});
    let mut stream = server.complete(request);
    assert!(stream.piece().is_some());
    let pid = server.child.id() as libc::pid_t;
    // SAFETY: signals the server process this test started and still holds.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut rest = Vec::new();
    while let Some(piece) = stream.piece() {
        rest.extend(piece);
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(
        rest.contains("\"finish_reason\":\"length\"") && rest.ends_with("data: [DONE]\n\n"),
        "{rest}"
    );
    // Still streaming when the signal came: most of its text came after.
    let pieces = rest.matches("\"finish_reason\":null").count();
    assert!(pieces > 10_000, "{pieces} pieces after the signal");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(TcpStream::connect(("127.0.0.1", server.port)).is_err());
}

/// Without an API key, what a web page could send is refused: another `Host` (DNS
/// rebinding) and a body that is not JSON; the playground fills each placeholder once;
/// response ids do not carry the seed.
#[test]
fn a_web_page_cannot_make_the_server_generate() {
    let server = Server::start(&["--model-name", "x{{KEY}}"]);
    let body = json!({"model": "x{{KEY}}", "prompt": "Speak", "max_tokens": 3, "seed": 7});
    let bytes = body.to_string();
    let raw = |host: &str, content_type: &str| {
        let mut stream = server.connect();
        let head = format!(
            "POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{bytes}",
            bytes.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        Response::read_head(stream).json()
    };
    let port = server.port;
    let (status, error) = raw(&format!("rebound.example:{port}"), "application/json");
    assert_eq!(status, 403, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rebound.example")
    );
    assert_eq!(raw(&format!("localhost:{port}"), "text/plain").0, 415);
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "localhost".into(),
    ] {
        assert_eq!(
            raw(&host, "application/json; charset=utf-8").0,
            200,
            "{host}"
        );
    }
    // The page shows the name as given, and sends it back as the API knows it.
    let (status, page) = {
        let response = server.send("GET", "/", &[], b"");
        (response.status, String::from_utf8(response.body()).unwrap())
    };
    assert_eq!(status, 200);
    assert!(
        page.contains("x{{KEY}}") && !page.contains("xnone"),
        "the name was filled again"
    );
    let (_, a) = server.post("/v1/completions", &body).json();
    let (_, b) = server.post("/v1/completions", &body).json();
    assert_eq!(a["choices"], b["choices"]);
    assert_ne!(a["id"], b["id"], "the same seed gave the same id");
}

/// An API key on the command line is visible in `ps`: the server says so.
#[test]
fn a_key_on_the_command_line_is_warned_about() {
    let server = Server::start(&["--api-key", "k3y"]);
    assert!(
        server
            .startup
            .contains("warning: --api-key on the command line is visible"),
        "{}",
        server.startup
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    std::fs::write(&file, "k3y\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start(&["--api-key-file", file.to_str().unwrap()]);
    assert!(
        server
            .startup
            .contains("may be read by other users (mode 644): chmod 600"),
        "{}",
        server.startup
    );
}

/// Raises this process's open-file limit to its hard limit: the flood holds thousands
/// of sockets.
fn raise_file_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the one struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur as usize
}

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Thousands of connections that send nothing or half a header, from a stranger who
/// needs no key: a real client is still served while they are open, they are closed
/// after the header timeout, and the memory stays bounded.
#[test]
fn a_flood_of_idle_and_slow_connections_leaves_the_server_serving() {
    let files = raise_file_limit();
    let server = Server::start(&["--max-connections", "4096"]);
    let before = rss_kib(server.child.id());
    let flood = 3000.min(files.saturating_sub(200));
    let mut held = Vec::new();
    for i in 0..flood {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        if i % 2 == 1 {
            // Slowloris: a header that never ends.
            stream
                .write_all(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nX-a: ")
                .unwrap();
        }
        held.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = rss_kib(server.child.id());
    let started = Instant::now();
    let (status, body) = server
        .complete(json!({"prompt": "Speak", "max_tokens": 20, "seed": 1}))
        .json();
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    eprintln!(
        "{flood} idle or half-header connections: RSS {before} KiB before, {during} KiB with them; a completion took {:?}",
        started.elapsed()
    );
    assert!(
        during < before + 200 * 1024,
        "{during} KiB with the flood, {before} before"
    );
    // After the header timeout (10 s) every one of them was closed by the server (one
    // accepted late under load closes within the read timeout).
    std::thread::sleep(Duration::from_secs(12));
    let mut closed = 0;
    for stream in &mut held {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut byte = [0u8; 512];
        // A closed connection reads its end (a 408 answer first, for a half header).
        loop {
            match stream.read(&mut byte) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
    }
    assert_eq!(closed, flood);
    let (status, _) = server
        .complete(json!({"prompt": "Speak", "max_tokens": 5}))
        .json();
    assert_eq!(status, 200);
}

/// Past --max-connections a connection is closed at once; the ones within are served.
#[test]
fn connections_past_the_limit_are_closed() {
    let server = Server::start(&["--max-connections", "4"]);
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", server.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = server.connect();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = extra.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut byte = [0u8; 1];
    assert!(
        matches!(extra.read(&mut byte), Ok(0) | Err(_)),
        "served past the limit"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.send("GET", "/health", &[], b"").status, 200);
}

/// After SIGTERM, a connection that never sends its header and a stream nobody reads
/// hold the server for --drain-timeout at most; a second SIGTERM stops it at once.
#[test]
fn shutdown_waits_for_stragglers_only_so_long() {
    let mut server = Server::start(&["--drain-timeout", "2", "--max-tokens-limit", "1000000"]);
    let _silent = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let mut half = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHo").unwrap();
    let request = json!({"prompt": "Speak", "max_tokens": 1000000, "stream": true});
    let unread = server.complete(request);
    std::thread::sleep(Duration::from_millis(300));
    let pid = server.child.id() as libc::pid_t;
    let started = Instant::now();
    // SAFETY: signals the server process this test started and still holds.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "{took:?}"
    );
    drop(unread);

    let mut server = Server::start(&["--drain-timeout", "600", "--max-tokens-limit", "1000000"]);
    let request = json!({"prompt": "Speak", "max_tokens": 1000000, "stream": true});
    let _unread = server.complete(request);
    std::thread::sleep(Duration::from_millis(300));
    let pid = server.child.id() as libc::pid_t;
    let started = Instant::now();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = server.child.wait().unwrap();
    assert!(!status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// A stream nobody reads is not kept in memory: once its client has left 4,096 pieces
/// unread (beyond what the sockets hold), the request is ended with an error event.
#[test]
fn a_stream_nobody_reads_is_ended() {
    let server = Server::start(&["--max-tokens-limit", "1000000"]);
    let request = json!({"prompt": "Speak", "max_tokens": 1000000, "stream": true});
    let mut stream = server.complete(request);
    std::thread::sleep(Duration::from_secs(10));
    let rss = rss_kib(server.child.id());
    let mut rest = Vec::new();
    while let Some(piece) = stream.piece() {
        rest.extend(piece);
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(
        rest.contains("pieces of its stream unread: the request was ended"),
        "{}",
        &rest[rest.len().saturating_sub(500)..]
    );
    assert!(!rest.contains("[DONE]"));
    assert!(rss < 200 * 1024, "{rss} KiB");
    // The server goes on serving.
    let (status, _) = server
        .complete(json!({"prompt": "Speak", "max_tokens": 5}))
        .json();
    assert_eq!(status, 200);
}

/// `/tokenize` and `/detokenize` as llama-server has them, and one log line a request
/// (off with `--quiet`).
#[test]
fn tokens_both_ways_and_a_line_per_request() {
    let server = Server::start(&[]);
    let (status, body) = server
        .post(
            "/tokenize",
            &json!({"content": "Speak", "with_pieces": true}),
        )
        .json();
    assert_eq!(status, 200, "{body}");
    let pieces: Vec<&str> = body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["piece"].as_str().unwrap())
        .collect();
    assert_eq!(pieces, ["S", "p", "e", "a", "k"]);
    let ids: Vec<Value> = body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].clone())
        .collect();
    let (status, plain) = server
        .post("/tokenize", &json!({"content": "Speak"}))
        .json();
    assert_eq!((status, &plain["tokens"]), (200, &json!(ids)));
    let (status, text) = server.post("/detokenize", &json!({"tokens": ids})).json();
    assert_eq!((status, text["content"].as_str()), (200, Some("Speak")));
    let (status, bad) = server
        .post("/detokenize", &json!({"tokens": [99999]}))
        .json();
    assert_eq!(status, 400, "{bad}");
    let (status, bad) = server.post("/tokenize", &json!({"content": "Ω"})).json();
    assert_eq!(status, 400, "{bad}");

    let (status, _) = server
        .complete(json!({"prompt": "All:", "max_tokens": 3}))
        .json();
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(200));
    let log = String::from_utf8_lossy(&server.log.lock().unwrap()).into_owned();
    let line = log
        .lines()
        .find(|l| l.contains(" POST /v1/completions 200 "))
        .expect(&log);
    assert!(line.starts_with("127.0.0.1:"), "{line}");
    assert!(
        line.contains(" in 4 out 3 tokens ") && line.ends_with(" ms"),
        "{line}"
    );
    assert!(log.contains(" POST /detokenize 400 "), "{log}");

    let quiet = Server::start(&["--quiet"]);
    let (status, _) = quiet
        .complete(json!({"prompt": "All:", "max_tokens": 3}))
        .json();
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(200));
    assert!(quiet.log.lock().unwrap().is_empty());
}
