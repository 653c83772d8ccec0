//! What the edge puts in front of every request when a lesson asks for it: the trace (request
//! id, response time, log line) and the cluster-wide rate limit, as tower layers around the
//! edge's own dispatch. Off, it is one `Option` check per request.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower::{ServiceBuilder, ServiceExt};

use super::response_body::{EdgeBody, error_response};
use crate::http::rate_limit::RateLimitLayer;
use crate::http::recycle::Recycled;
use crate::http::trace::TraceLayer;

/// The layers in front of the edge; either may be off.
#[derive(Debug, Clone, Default)]
pub(crate) struct Front {
    pub trace: Option<TraceLayer>,
    pub rate_limit: Option<RateLimitLayer>,
}

impl Front {
    /// Whether any layer is on (if none, the edge skips the front altogether).
    pub(crate) fn is_on(&self) -> bool {
        self.trace.is_some() || self.rate_limit.is_some()
    }

    /// `req` from `client` through the layers, then `dispatch` (the master's routes or a worker).
    /// The trace is outermost, so a 429 has its request id and time too.
    pub(crate) async fn serve<B, F, Fut>(
        &self,
        req: Request<B>,
        client: SocketAddr,
        dispatch: F,
    ) -> Response<EdgeBody>
    where
        F: FnOnce(Request<B>) -> Fut,
        Fut: Future<Output = Response<EdgeBody>>,
    {
        // A oneshot service calls its function once; the Option is how an FnOnce becomes the
        // FnMut that `service_fn` takes.
        let mut dispatch = Some(dispatch);
        let service = tower::service_fn(move |req| {
            // Boxed: each layer's future holds the one inside it by value, so unboxed the
            // dispatch future (the proxy's) was copied whole at every wrapping; `memmove` was the
            // profile's largest excess over the bare proxy (0.8 µs a request), and side by side
            // the box measured 4% less master CPU per request. The block comes from the
            // thread's cache, not the allocator (`http::recycle`).
            let once = dispatch.take().map(|f| Recycled::new(f(req)));
            async move {
                Ok::<_, Infallible>(match once {
                    Some(f) => f.await,
                    None => error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "request dispatched twice",
                    ),
                })
            }
        });
        ServiceBuilder::new()
            .option_layer(self.trace)
            // Keyed on the connection's peer, given to the layer rather than set as the request's
            // `ClientAddr`: an extension costs the request its first map of them, three
            // allocations.
            .option_layer(self.rate_limit.as_ref().map(|l| l.for_peer(client)))
            .service(service)
            .oneshot(req)
            .await
            .unwrap_or_else(|never| match never {})
    }
}

impl From<Bytes> for EdgeBody {
    fn from(bytes: Bytes) -> Self {
        EdgeBody::Full(Some(bytes))
    }
}
