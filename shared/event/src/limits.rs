//! Segment's documented ingest limits (HTTP Tracking API, "Max request size" and "Errors").

/// Largest accepted single message, in bytes of JSON.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Largest accepted batch request body, in bytes of JSON (after decompression).
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Most messages accepted in one batch.
pub const MAX_BATCH_MESSAGES: usize = 2500;
/// `messageId` must be shorter than this many characters.
pub const MAX_MESSAGE_ID_CHARS: usize = 100;
