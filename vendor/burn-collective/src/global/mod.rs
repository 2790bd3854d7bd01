pub(crate) mod node;
pub(crate) mod shared;
// quill: named by callers that tell a world-size mismatch from other failures.
pub use shared::GlobalCollectiveError;

#[cfg(feature = "orchestrator")]
pub mod orchestrator;
#[cfg(feature = "orchestrator")]
pub use orchestrator::*;

mod base;
pub use base::*;
