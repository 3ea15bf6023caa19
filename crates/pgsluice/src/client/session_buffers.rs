//! The read buffers of idle clients' requests, reused per worker thread.

use std::cell::RefCell;

use bytes::BytesMut;

use super::IDLE_READ;
use crate::server::RELAY_BUF;

/// Most idle-read buffers a worker thread keeps for reuse (1 KiB each).
const SPARE_READS: usize = 64;

thread_local! {
    /// Read buffers of this thread's finished requests, kept for the next idle reads: a
    /// malloc and a free fewer per transaction (callgrind: ~150 instructions). Kept per
    /// thread, never per client: an idle client still holds no buffer.
    pub(super) static SPARE_READ: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A buffer for an idle client's read: one of this thread's spares, else a new one.
pub(super) fn idle_read_buffer() -> BytesMut {
    SPARE_READ
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| BytesMut::with_capacity(IDLE_READ.min(RELAY_BUF)))
}

/// Keeps `buf` as a spare read buffer of this thread when it is one of
/// [`idle_read_buffer`]'s, whole (not split, not grown) and the thread has room for it;
/// else frees it.
pub(super) fn recycle_read_buffer(mut buf: BytesMut) {
    buf.clear();
    if buf.capacity() == IDLE_READ.min(RELAY_BUF) {
        SPARE_READ.with_borrow_mut(|spares| {
            if spares.len() < SPARE_READS {
                spares.push(buf);
            }
        });
    }
}
