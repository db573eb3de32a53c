//! The Segment message model shared by every service.
//!
//! A message is kept as its JSON object (`Message`) so fields this project does not know about pass
//! through untouched, exactly as a Segment user expects to see them in a topic dump. [`Message::check`]
//! applies the spec's required-field rules and returns the call type, or a [`SpecViolation`] with a
//! bounded code. The typed views in [`calls`] are for consumers that want struct access.

pub mod calls;
mod limits;
mod message;

pub use limits::{MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, MAX_MESSAGE_ID_CHARS};
pub use message::{parse_json, parse_json_str, Message, MessageType, SpecViolation};
