//! Reading a request body into one buffer, within bounds of size, pieces
//! and time.
//!
//! hyper hands a body over as one frame per chunk (or per socket read).
//! Keeping each frame as its own `Bytes` costs a `Bytes` handle per frame
//! and keeps hyper's read buffers alive: a body sent as 1-byte chunks cost
//! about 40 times its size. Here frames are copied into one buffer that at
//! most doubles when full (so it never holds more than twice the bytes
//! received), frames are counted against a limit, and the whole body must
//! arrive before a deadline.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION};
use http::StatusCode;
use http_body_util::BodyExt;

use crate::body::{Body, Response};

/// The bounds on one request body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// Most bytes a body may have.
    pub(crate) max_bytes: usize,
    /// Most data frames (chunks, socket reads) a body may arrive in.
    pub(crate) max_frames: usize,
    /// Time from the request head to the body's last byte.
    pub(crate) read_timeout: Duration,
}

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("request body is larger than {0} bytes\n")]
    TooLarge(usize),
    #[error("request body arrived in more than {0} pieces; send it in larger chunks\n")]
    TooManyFrames(usize),
    #[error("request body did not arrive within {0:?}\n")]
    TimedOut(Duration),
    #[error("could not read the request body\n")]
    Read(#[source] hyper::Error),
}

impl BodyError {
    /// The response to send instead of running the pipeline. The connection
    /// is closed after it: the rest of the body is not read.
    pub(crate) fn into_response(self) -> Response {
        let code = match &self {
            BodyError::TooLarge(_) | BodyError::TooManyFrames(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(e) => {
                tracing::debug!(error = %e, "could not read the request body");
                StatusCode::BAD_REQUEST
            }
        };
        let mut r = Response::new(Body::from(self.to_string()));
        *r.status_mut() = code;
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        r
    }
}

/// Reads `body` to the end within `limits` (trailers dropped).
pub(crate) async fn collect<B>(body: B, limits: BodyLimits) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    let read = read_frames(body, limits);
    match tokio::time::timeout(limits.read_timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(BodyError::TimedOut(limits.read_timeout)),
    }
}

async fn read_frames<B>(mut body: B, limits: BodyLimits) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return Err(BodyError::TooLarge(limits.max_bytes));
    }
    let mut acc = Collector::new(limits, declared);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(BodyError::Read)?.into_data() {
            acc.push(data)?;
        }
    }
    Ok(acc.finish())
}

/// The buffer a body is read into.
///
/// Invariant: `capacity() <= max(2 * len(), first frame)`: the buffer
/// grows to the larger of twice its capacity and what the next frame needs,
/// never past the declared length or the byte limit.
#[derive(Debug)]
pub(crate) struct Collector {
    limits: BodyLimits,
    /// Where the buffer stops growing: the declared length, else the limit.
    ceiling: usize,
    /// The only frame so far, kept as hyper gave it (no copy); `None` once
    /// a second frame arrived and both went into `buf`.
    first: Option<Bytes>,
    buf: Vec<u8>,
    frames: usize,
}

impl Collector {
    pub(crate) fn new(limits: BodyLimits, declared: Option<u64>) -> Self {
        let ceiling = declared
            .and_then(|n| usize::try_from(n).ok())
            .map_or(limits.max_bytes, |n| n.min(limits.max_bytes));
        Collector {
            limits,
            ceiling,
            first: None,
            buf: Vec::new(),
            frames: 0,
        }
    }

    /// Adds one data frame.
    pub(crate) fn push(&mut self, data: Bytes) -> Result<(), BodyError> {
        if data.is_empty() {
            return Ok(());
        }
        self.frames += 1;
        if self.frames > self.limits.max_frames {
            return Err(BodyError::TooManyFrames(self.limits.max_frames));
        }
        if self.len().saturating_add(data.len()) > self.limits.max_bytes {
            return Err(BodyError::TooLarge(self.limits.max_bytes));
        }
        if self.frames == 1 {
            self.first = Some(data);
            return Ok(());
        }
        if let Some(first) = self.first.take() {
            self.append(&first);
        }
        self.append(&data);
        Ok(())
    }

    fn append(&mut self, data: &[u8]) {
        let needed = self.buf.len() + data.len();
        if needed > self.buf.capacity() {
            let doubled = (self.buf.capacity() * 2).min(self.ceiling);
            let target = needed.max(doubled);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received so far.
    pub(crate) fn len(&self) -> usize {
        self.first.as_ref().map_or(self.buf.len(), Bytes::len)
    }

    #[cfg(test)]
    /// Bytes held for the body now (the buffer's capacity, or the single
    /// frame's length).
    pub(crate) fn held(&self) -> usize {
        self.first.as_ref().map_or(self.buf.capacity(), Bytes::len)
    }

    pub(crate) fn finish(self) -> Bytes {
        match self.first {
            Some(only) => only,
            None => Bytes::from(self.buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: usize, max_frames: usize) -> BodyLimits {
        BodyLimits {
            max_bytes,
            max_frames,
            read_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn one_byte_frames_hold_at_most_twice_their_size() {
        let mut c = Collector::new(limits(1 << 20, usize::MAX), None);
        for i in 0..100_000u32 {
            c.push(Bytes::from(vec![i as u8])).unwrap();
            assert!(c.held() <= 2 * c.len(), "{} held for {}", c.held(), c.len());
        }
        let body = c.finish();
        assert_eq!(body.len(), 100_000);
        assert_eq!(body[99_999], (99_999u32 as u8));
    }

    #[test]
    fn declared_length_caps_the_buffer() {
        let mut c = Collector::new(limits(1 << 20, usize::MAX), Some(1000));
        for _ in 0..1000 {
            c.push(Bytes::from_static(b"x")).unwrap();
        }
        assert_eq!(c.held(), 1000);
    }

    #[test]
    fn a_single_frame_is_not_copied() {
        let frame = Bytes::from(vec![7u8; 4096]);
        let ptr = frame.as_ptr();
        let mut c = Collector::new(limits(1 << 20, 8), None);
        c.push(frame).unwrap();
        assert_eq!(c.finish().as_ptr(), ptr);
    }

    #[test]
    fn frames_and_bytes_are_limited() {
        let mut c = Collector::new(limits(1 << 20, 3), None);
        for _ in 0..3 {
            c.push(Bytes::from_static(b"ab")).unwrap();
        }
        let err = c.push(Bytes::from_static(b"ab")).unwrap_err();
        assert!(matches!(err, BodyError::TooManyFrames(3)));

        let mut c = Collector::new(limits(5, 100), None);
        c.push(Bytes::from_static(b"abc")).unwrap();
        let err = c.push(Bytes::from_static(b"abc")).unwrap_err();
        assert!(matches!(err, BodyError::TooLarge(5)));
        assert_eq!(err.into_response().status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
