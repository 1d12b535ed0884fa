//! A second provider for when the first fails before producing a token.

use std::sync::Arc;

use async_trait::async_trait;

use super::{ChatRequest, Completion, Provider, ProviderError, ProviderStream};

pub struct Fallback {
    primary: Arc<dyn Provider>,
    secondary: Arc<dyn Provider>,
}

impl Fallback {
    pub fn new(primary: Arc<dyn Provider>, secondary: Arc<dyn Provider>) -> Self {
        Self { primary, secondary }
    }

    /// The request as the secondary takes it: the allowed models are the
    /// primary's, so the secondary answers with its own default model.
    fn for_secondary(&self, request: &ChatRequest, err: &ProviderError) -> ChatRequest {
        tracing::warn!(error = %err, fallback_model = self.secondary.default_model(), "primary provider failed; falling back");
        ChatRequest {
            model: self.secondary.default_model().to_owned(),
            ..request.clone()
        }
    }
}

#[async_trait]
impl Provider for Fallback {
    fn default_model(&self) -> &str {
        self.primary.default_model()
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, ProviderError> {
        match self.primary.complete(request).await {
            Ok(completion) => Ok(completion),
            Err(err) => {
                self.secondary
                    .complete(&self.for_secondary(request, &err))
                    .await
            }
        }
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ProviderStream, ProviderError> {
        match self.primary.stream(request).await {
            Ok(stream) => Ok(stream),
            Err(err) => {
                self.secondary
                    .stream(&self.for_secondary(request, &err))
                    .await
            }
        }
    }
}
