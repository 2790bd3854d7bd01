mod base;
mod client;
pub mod guard;
mod server;

pub use base::*;
pub use client::*;
pub use server::*;
