//! Lambda: /sessions (list, create, read, rename, delete, export), /usage and /health.

use chat_core::{app, function, routes};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = function::cold_start(function::Needs::StoreOnly).await?;
    let routes = routes::sessions::router()
        .merge(routes::usage::router())
        .merge(routes::health::router());
    lambda_http::run(app::build(routes, state)).await
}
