//! [`CircuitBreakerLayer`]: wraps a service in the breaker it was given.

use tower::Layer;

use super::classify::DefaultClassifier;
use super::service::CircuitBreakerService;
use super::shared::CircuitBreaker;

/// Puts every service it wraps behind one shared [`CircuitBreaker`]: one breaker per service
/// guarded, however many clones of the service there are.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = DefaultClassifier> {
    breaker: CircuitBreaker,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// Guards with `breaker`, judging results with [`DefaultClassifier`].
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            classifier: DefaultClassifier,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Judges results with `classifier` instead.
    pub fn with_classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }

    /// The breaker, to read or force its state.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breaker.clone(), self.classifier.clone())
    }
}
