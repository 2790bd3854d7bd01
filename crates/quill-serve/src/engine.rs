//! The decoding loop: takes requests from the queue into a [`Batcher`] as places free
//! up, steps the whole batch, and sends each request its text as it is generated.
//!
//! It runs on its own thread, the model's; the HTTP side talks to it through the
//! bounded queue (requests in) and one channel per request (events out). A request
//! whose channel has closed — its client went away — leaves the batch before the next
//! step, and so does one whose client has left [`MAX_UNREAD`] events unread (a stream
//! nobody reads is ended, not kept in memory).

use anyhow::Result;
use burn::tensor::backend::Backend;
use quill_data::Tokenizer;
use quill_model::{Batcher, GroupId, LanguageModel, SamplingOptions, StopText};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::api::Finish;

/// One prompt of a request, with its `rows` completions (choices
/// `first_choice..first_choice + rows`).
#[derive(Debug)]
pub struct Work {
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    /// Completions of it, sampled together.
    pub rows: usize,
    /// The choice index of its first completion.
    pub first_choice: usize,
    /// Tokens to generate at most.
    pub max_tokens: usize,
    /// Strings that end a completion.
    pub stop: Vec<String>,
    /// How to sample.
    pub options: SamplingOptions,
    /// Where its events go.
    pub events: EventSender,
    /// The request's place in the queue, given back when the batch takes it.
    pub place: Option<OwnedSemaphorePermit>,
}

/// The most events a request's client may leave unread (pieces of text, about a token
/// each): past that, its request fails and leaves the batch.
pub const MAX_UNREAD: usize = 4096;

/// A request's events, both ends, counting those sent and not yet read.
pub fn events() -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let unread = Arc::new(AtomicUsize::new(0));
    let sender = EventSender {
        tx,
        unread: unread.clone(),
    };
    (sender, EventReceiver { rx, unread })
}

/// The engine's end of a request's events.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: mpsc::UnboundedSender<Event>,
    unread: Arc<AtomicUsize>,
}

impl EventSender {
    /// Sends `event` (nothing happens when the client has gone).
    pub fn send(&self, event: Event) {
        if self.tx.send(event).is_ok() {
            self.unread.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the client went away.
    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether the client has left more than [`MAX_UNREAD`] events unread.
    fn lagging(&self) -> bool {
        self.unread.load(Ordering::Relaxed) > MAX_UNREAD
    }
}

/// The HTTP side's end of a request's events.
#[derive(Debug)]
pub struct EventReceiver {
    rx: mpsc::UnboundedReceiver<Event>,
    unread: Arc<AtomicUsize>,
}

impl EventReceiver {
    /// The next event; `None` once the engine has dropped the request.
    pub async fn recv(&mut self) -> Option<Event> {
        let event = self.rx.recv().await;
        if event.is_some() {
            self.unread.fetch_sub(1, Ordering::Relaxed);
        }
        event
    }
}

/// What the loop tells a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New text of one choice.
    Text {
        /// The choice.
        choice: usize,
        /// Its new text.
        text: String,
    },
    /// A choice is complete, after `tokens` generated tokens.
    Finished {
        /// The choice.
        choice: usize,
        /// Why it ended.
        finish: Finish,
        /// Tokens it generated.
        tokens: usize,
    },
    /// The model failed; the request cannot complete.
    Failed(String),
}

/// A request's prompt in the batch.
struct Active {
    id: GroupId,
    work: Work,
    texts: Vec<StopText>,
    /// Tokens generated per row.
    generated: usize,
    done: Vec<bool>,
}

impl Active {
    fn send(&self, event: Event) {
        // A closed channel is a client gone; the next step drops the group.
        self.work.events.send(event);
    }

    /// Takes one new token per row; returns whether every row is done.
    fn take(&mut self, tokenizer: &Tokenizer, tokens: &[u32]) -> Result<bool> {
        self.generated += 1;
        for (row, &id) in tokens.iter().enumerate() {
            if self.done[row] {
                continue;
            }
            let choice = self.work.first_choice + row;
            let mut text = self.texts[row].push(tokenizer, id)?;
            let finish = if self.texts[row].stopped() {
                Some(Finish::Stop)
            } else if self.generated == self.work.max_tokens {
                text.push_str(&self.texts[row].finish());
                Some(Finish::Length)
            } else {
                None
            };
            if !text.is_empty() {
                self.send(Event::Text { choice, text });
            }
            if let Some(finish) = finish {
                self.done[row] = true;
                let tokens = self.generated;
                self.send(Event::Finished {
                    choice,
                    finish,
                    tokens,
                });
            }
        }
        Ok(self.done.iter().all(|&d| d))
    }
}

/// Serves the queue until it is closed and empty and the batch has finished: at most
/// `max_rows` sequences decode together.
pub fn run<B: Backend>(
    model: &LanguageModel<B>,
    tokenizer: &Tokenizer,
    queue: &mut mpsc::UnboundedReceiver<Work>,
    max_rows: usize,
) -> Result<()> {
    let mut batcher = Batcher::new(model);
    let mut active: Vec<Active> = Vec::new();
    let mut waiting: Option<Work> = None;
    loop {
        // Admit what fits, oldest first; wait for work only when there is none.
        loop {
            let work = match waiting.take() {
                Some(work) => work,
                None if batcher.is_empty() => match queue.blocking_recv() {
                    Some(work) => work,
                    None => return Ok(()),
                },
                None => match queue.try_recv() {
                    Ok(work) => work,
                    Err(_) => break,
                },
            };
            if work.events.is_closed() {
                continue;
            }
            if batcher.rows() + work.rows > max_rows {
                waiting = Some(work);
                break;
            }
            let mut work = work;
            work.place = None;
            let id = match batcher.add(&vec![work.prompt.clone(); work.rows], &work.options) {
                Ok(id) => id,
                Err(e) => {
                    work.events.send(Event::Failed(e.to_string()));
                    continue;
                }
            };
            active.push(Active {
                id,
                texts: vec![StopText::new(&work.stop); work.rows],
                generated: 0,
                done: vec![false; work.rows],
                work,
            });
        }
        active.retain(|a| {
            let lagging = a.work.events.lagging();
            if lagging {
                a.send(Event::Failed(format!(
                    "the client left more than {MAX_UNREAD} pieces of its stream unread: the request was ended"
                )));
            }
            let gone = lagging || a.work.events.is_closed();
            if gone {
                batcher.remove(a.id);
            }
            !gone
        });
        if batcher.is_empty() {
            continue;
        }
        let step = match batcher.step() {
            Ok(step) => step,
            Err(e) => {
                for a in &active {
                    a.send(Event::Failed(e.to_string()));
                }
                return Err(e.into());
            }
        };
        for (a, (id, tokens)) in active.iter_mut().zip(step) {
            debug_assert_eq!(a.id, id, "the batcher keeps the order groups joined in");
            if a.take(tokenizer, &tokens)? {
                batcher.remove(id);
            }
        }
        active.retain(|a| !a.done.iter().all(|&d| d));
    }
}
