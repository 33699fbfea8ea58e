//! Reading streaming bodies into [`Body`].

use http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::body::{Body, Request, Response};
use crate::future::LocalBoxFuture;

/// The error type tower services commonly use.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Default cap on a request body read into [`Body`]: 2.5 MiB, Django's
/// `DATA_UPLOAD_MAX_MEMORY_SIZE`.
pub const DEFAULT_BODY_LIMIT: usize = 2_621_440;

/// Reads `req`'s body to the end (at most `limit` bytes, trailers dropped).
/// `Err` is the response to send instead: `413` over the limit, `400` when
/// the body fails to read.
pub(crate) async fn collect_request<B>(
    req: http::Request<B>,
    limit: usize,
) -> Result<Request, Response>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Request::from_parts(parts, Body::from(collected.to_bytes()))),
        Err(e) if e.is::<LengthLimitError>() => Err(status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes\n"),
        )),
        Err(e) => {
            tracing::debug!(error = %e, "could not read the request body");
            Err(status(
                StatusCode::BAD_REQUEST,
                "could not read the request body\n".to_owned(),
            ))
        }
    }
}

/// A plain-text response with `code`.
pub(crate) fn status(code: StatusCode, text: String) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = code;
    r
}

/// A response an inner service returns, read into a pipeline [`Response`]
/// (so sync middleware can look at and change it).
///
/// Implemented for `http::Response<B>` with any `http_body::Body` `B`; the
/// body is read to the end (no limit, trailers dropped).
pub trait CollectResponse: Sized + 'static {
    /// Reads the whole body.
    fn collect_response(self) -> LocalBoxFuture<'static, Result<Response, BoxError>>;
}

impl<B> CollectResponse for http::Response<B>
where
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    fn collect_response(self) -> LocalBoxFuture<'static, Result<Response, BoxError>> {
        Box::pin(async move {
            let (parts, body) = self.into_parts();
            let collected = body.collect().await.map_err(Into::into)?;
            Ok(Response::from_parts(
                parts,
                Body::from(collected.to_bytes()),
            ))
        })
    }
}
