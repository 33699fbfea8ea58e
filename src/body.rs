//! The request/response body type.

use bytes::Bytes;

/// A complete, in-memory request or response body.
///
/// suspendware hands bodies across coroutine suspensions and thread hops, so
/// the body is a plain [`Bytes`] buffer: cheap to clone, `Send + Sync`, and
/// with no borrowed I/O state that could be left half-read on a suspended
/// stack. Server glue (the `tower` integration) collects streaming bodies
/// into a `Body` before the pipeline runs and streams the response out after.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body(Bytes);

impl Body {
    /// An empty body (the same as [`Body::default`]).
    pub const fn empty() -> Self {
        Body(Bytes::new())
    }

    /// The body's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Consumes the body, returning its buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the body has no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body(b)
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body(Bytes::from(v))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body(Bytes::from(s))
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body(Bytes::from_static(s.as_bytes()))
    }
}

impl From<&'static [u8]> for Body {
    fn from(s: &'static [u8]) -> Self {
        Body(Bytes::from_static(s))
    }
}

/// A `Body` is a complete body: it yields its bytes as one data frame (none
/// when empty) and has no trailers, so hyper and axum can send a
/// [`Response`] as it is.
impl http_body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let bytes = std::mem::take(&mut self.get_mut().0);
        std::task::Poll::Ready((!bytes.is_empty()).then(|| Ok(http_body::Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.len() as u64)
    }
}

/// An HTTP request as the pipeline sees it.
pub type Request = http::Request<Body>;

/// An HTTP response as the pipeline produces it.
pub type Response = http::Response<Body>;
