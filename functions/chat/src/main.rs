//! Lambda: POST /chat, answered as one JSON reply, and /health.

use chat_core::{app, function, routes};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = function::cold_start(function::Needs::Provider).await?;
    let routes = routes::chat::router().merge(routes::health::router());
    lambda_http::run(app::build(routes, state)).await
}
