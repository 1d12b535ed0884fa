//! Lambda, behind a function URL with response streaming: POST /chat/stream
//! as Server-Sent Events, and /health.

use chat_core::{app, function, routes};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = function::cold_start(function::Needs::Provider).await?;
    let routes = routes::chat_stream::router().merge(routes::health::router());
    lambda_http::run_with_streaming_response(app::build(routes, state)).await
}
