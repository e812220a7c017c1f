//! Read buffers shared by the connections of one worker thread.
//!
//! A connection holds a read buffer only while it has bytes to work on. An
//! HTTP/1.1 client connection takes one from its worker's [`BufPool`] when
//! bytes arrive and gives it back once a request is done and nothing of the
//! next one is buffered; a server connection gives its buffer back when it
//! goes idle into the connection pool (`upstream::h1::conn`). Idle
//! connections, client or server, therefore cost their task and socket, not
//! a buffer. A pool keeps at most [`KEEP`] buffers; single threaded (one per
//! worker thread, `RefCell`, never contended).

use std::cell::RefCell;

use bytes::BytesMut;

/// Size of a fresh buffer: a typical request head and a small body.
pub const SIZE: usize = 8 * 1024;
/// Buffers kept for reuse; more are freed when given back.
const KEEP: usize = 256;
/// A buffer that grew past this (a large pipelined batch or upload) is freed
/// rather than kept, so the pool never pins much memory.
const KEEP_AT_MOST: usize = 64 * 1024;

/// Free read buffers of one worker.
#[derive(Default)]
pub struct BufPool {
    free: RefCell<Vec<BytesMut>>,
}

impl BufPool {
    /// A buffer with room for at least [`SIZE`] bytes.
    pub fn take(&self) -> BytesMut {
        let mut buf = self
            .free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(SIZE));
        // Reclaims the whole allocation when nothing else points into it.
        buf.reserve(SIZE);
        buf
    }

    /// Gives an empty buffer back; one that still holds bytes is an error of
    /// the caller's and is simply freed.
    pub fn give(&self, mut buf: BytesMut) {
        if !buf.is_empty() || buf.capacity() == 0 || buf.capacity() > KEEP_AT_MOST {
            return;
        }
        buf.clear();
        let mut free = self.free.borrow_mut();
        if free.len() < KEEP {
            free.push(buf);
        }
    }

    /// Buffers waiting for reuse.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.free.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_bounded() {
        let pool = BufPool::default();
        let a = pool.take();
        assert!(a.capacity() >= SIZE);
        pool.give(a);
        assert_eq!(pool.len(), 1);
        let b = pool.take();
        assert_eq!(pool.len(), 0);
        let mut c = b;
        c.extend_from_slice(b"left over");
        pool.give(c);
        assert_eq!(pool.len(), 0, "a buffer with bytes is not pooled");
        pool.give(BytesMut::with_capacity(KEEP_AT_MOST + 1));
        assert_eq!(pool.len(), 0, "a grown buffer is freed");
        for _ in 0..KEEP + 10 {
            pool.give(BytesMut::with_capacity(SIZE));
        }
        assert_eq!(pool.len(), KEEP);
    }
}
