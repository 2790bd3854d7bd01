//! Measurements around training: memory before a run, speed, cross-backend parity.

pub mod bench;
pub mod memory;
pub mod parity;
