//! A completion from request to response, apart from HTTP: its prompts tokenised and
//! queued for the engine ([`Completions::start`]), then either gathered into one
//! [`Completion`] ([`Accepted::whole`]) or streamed chunk by chunk
//! ([`CompletionStream`], a state machine that ends explicitly).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use quill_data::Tokenizer;
use tokio::sync::{Semaphore, mpsc};

use crate::api::{ApiError, Choice, Completion, CompletionRequest, Finish, Usage};
use crate::engine::{self, Event, EventReceiver, Work};

/// What completions need: the tokenizer, the queue to the engine and its places.
#[derive(Debug)]
pub struct Completions {
    /// The served model's tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The served model's name, in every response.
    pub model: String,
    /// Requests in, to the engine.
    pub queue: mpsc::UnboundedSender<Work>,
    /// Places in the queue: a request holds one per prompt until the engine takes it
    /// into the batch; none left is a 503.
    pub places: Arc<Semaphore>,
}

/// A request accepted into the queue: its events and what its response needs.
#[derive(Debug)]
pub struct Accepted {
    /// The request.
    pub request: CompletionRequest,
    /// Its tokens in the prompts.
    pub prompt_tokens: usize,
    events: EventReceiver,
    id: String,
    created: u64,
    model: String,
}

impl Completions {
    /// Takes a place in the queue for a request not yet read: a full server reads no
    /// more bodies.
    pub fn place(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.places
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::busy())
    }

    /// Tokenises `request`'s prompts and queues them for the engine, the first in
    /// `first` place, each other in a place of its own.
    pub fn start(
        &self,
        request: CompletionRequest,
        first: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Accepted, ApiError> {
        let prompts = (request.prompts.iter())
            .map(|p| self.tokenizer.encode(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::invalid(Some("prompt"), e.to_string()))?;
        let (sender, events) = engine::events();
        let more = (1..prompts.len())
            .map(|_| self.place())
            .collect::<Result<Vec<_>, _>>()?;
        let places = std::iter::once(first).chain(more);
        let prompt_tokens = prompts.iter().map(Vec::len).sum();
        for ((i, prompt), place) in prompts.into_iter().enumerate().zip(places) {
            let work = Work {
                prompt,
                rows: request.n,
                first_choice: i * request.n,
                max_tokens: request.max_tokens,
                stop: request.stop.clone(),
                options: request.options.clone(),
                events: sender.clone(),
                place: Some(place),
            };
            if self.queue.send(work).is_err() {
                return Err(ApiError::failed("the model stopped"));
            }
        }
        Ok(Accepted {
            id: format!("cmpl-{:016x}", random_id()),
            request,
            events,
            prompt_tokens,
            created: now(),
            model: self.model.clone(),
        })
    }
}

impl Accepted {
    /// Choices in the response: prompts × `n`.
    fn choices(&self) -> usize {
        self.request.prompts.len() * self.request.n
    }

    /// The prompt of choice `choice`, for `echo`.
    fn echo_of(&self, choice: usize) -> &str {
        match self.request.echo {
            true => &self.request.prompts[choice / self.request.n],
            false => "",
        }
    }

    /// A `text_completion` object of this request.
    fn object(&self, choices: Vec<Choice>, usage: Option<Usage>) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices,
            system_fingerprint: None,
            usage,
        }
    }

    /// The whole response, once every choice is complete.
    pub async fn whole(mut self) -> Result<Completion, ApiError> {
        let choices = self.choices();
        let mut texts: Vec<String> = (0..choices).map(|c| self.echo_of(c).to_string()).collect();
        let mut finishes: Vec<Option<Finish>> = vec![None; choices];
        let mut completion_tokens = 0;
        while finishes.iter().any(Option::is_none) {
            match self.events.recv().await {
                Some(Event::Text { choice, text }) => texts[choice].push_str(&text),
                Some(Event::Finished {
                    choice,
                    finish,
                    tokens,
                }) => {
                    finishes[choice] = Some(finish);
                    completion_tokens += tokens;
                }
                Some(Event::Failed(message)) => return Err(ApiError::failed(message)),
                None => return Err(ApiError::failed("the model stopped")),
            }
        }
        let choices = (texts.into_iter().zip(finishes).enumerate())
            .map(|(i, (text, finish))| Choice::new(i, text, finish))
            .collect();
        let usage = Usage::new(self.prompt_tokens, completion_tokens);
        Ok(self.object(choices, Some(usage)))
    }

    /// The response as a stream of chunks.
    pub fn stream(self) -> CompletionStream {
        // Echoed prompts go first.
        let echoes = (0..self.choices())
            .filter(|_| self.request.echo)
            .map(|choice| Event::Text {
                choice,
                text: self.echo_of(choice).to_string(),
            })
            .collect();
        CompletionStream {
            open: self.choices(),
            accepted: self,
            pending: echoes,
            completion_tokens: 0,
            state: StreamState::Generating,
        }
    }
}

/// What a stream sends next.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// A chunk: a piece of one choice's text, a choice's `finish_reason`, or the usage.
    Chunk(Completion),
    /// The request failed; nothing follows.
    Error(ApiError),
    /// The end marker (`data: [DONE]`); nothing follows.
    Done,
}

/// Where a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Choices are open: their text and finishes come as chunks.
    Generating,
    /// Every choice has finished and the usage was asked for: its chunk is next.
    Usage,
    /// The end marker is next.
    Done,
    /// Nothing more: the marker or an error was sent.
    Ended,
}

/// A streamed completion: a chunk per piece of text, one with each choice's
/// `finish_reason`, the usage if asked for (`stream_options.include_usage`), then the
/// end marker; or an error, which ends it.
#[derive(Debug)]
pub struct CompletionStream {
    accepted: Accepted,
    /// Events to send before the engine's (the echoed prompts).
    pending: VecDeque<Event>,
    /// Choices not finished yet.
    open: usize,
    completion_tokens: usize,
    state: StreamState,
}

impl CompletionStream {
    /// Where the stream is.
    pub fn state(&self) -> StreamState {
        self.state
    }

    /// The next item; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<StreamItem> {
        loop {
            match self.state {
                StreamState::Generating if self.pending.is_empty() && self.open == 0 => {
                    self.state = match self.accepted.request.stream_usage {
                        true => StreamState::Usage,
                        false => StreamState::Done,
                    };
                }
                StreamState::Generating => return Some(self.generating().await),
                StreamState::Usage => {
                    self.state = StreamState::Done;
                    let usage = Usage::new(self.accepted.prompt_tokens, self.completion_tokens);
                    let chunk = self.accepted.object(Vec::new(), Some(usage));
                    return Some(StreamItem::Chunk(chunk));
                }
                StreamState::Done => {
                    self.state = StreamState::Ended;
                    return Some(StreamItem::Done);
                }
                StreamState::Ended => return None,
            }
        }
    }

    /// The next item while choices are open: a piece of text, a finish, or a failure.
    async fn generating(&mut self) -> StreamItem {
        let event = match self.pending.pop_front() {
            Some(event) => Some(event),
            None => self.accepted.events.recv().await,
        };
        let chunk =
            |s: &Self, choice: Choice| StreamItem::Chunk(s.accepted.object(vec![choice], None));
        match event {
            Some(Event::Text { choice, text }) => chunk(self, Choice::new(choice, text, None)),
            Some(Event::Finished {
                choice,
                finish,
                tokens,
            }) => {
                self.open -= 1;
                self.completion_tokens += tokens;
                chunk(self, Choice::new(choice, "", Some(finish)))
            }
            Some(Event::Failed(message)) => self.fail(message),
            None => self.fail("the model stopped".into()),
        }
    }

    fn fail(&mut self, message: String) -> StreamItem {
        self.state = StreamState::Ended;
        StreamItem::Error(ApiError::failed(message))
    }
}

/// Now, in Unix seconds.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A response id independent of the request (its seed included): the standard
/// library's randomly keyed hash of a counter.
fn random_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    RandomState::new().hash_one(n)
}
