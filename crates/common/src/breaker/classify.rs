//! What counts as a failure.

use super::core::Outcome;

/// Judges a finished call. The breaker asks it about every result, before the inner error is
/// boxed, so it can tell a timeout from a refused request.
pub trait Classify<Res, Err> {
    /// The call's outcome.
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome;
}

/// For HTTP: a 5xx and every error (timeouts, connection failures) are failures; anything the
/// service answered below 500, 4xx included, is a success: a 404 is the client's mistake, not
/// a sign the service is down.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl<B, E> Classify<http::Response<B>, E> for DefaultClassifier {
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Outcome {
        match result {
            Ok(res) if res.status().is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// Any function from a result to an outcome is a classifier.
impl<F, Res, Err> Classify<Res, Err> for F
where
    F: Fn(Result<&Res, &Err>) -> Outcome,
{
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome {
        self(result)
    }
}
