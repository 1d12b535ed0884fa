//! Lambda: /admin (the dashboard page and the admin API), the API's docs
//! (/openapi.json, /docs) and /health.

use chat_core::{app, function, routes};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = function::cold_start(function::Needs::StoreOnly).await?;
    let routes = routes::admin::router()
        .merge(routes::docs::router())
        .merge(routes::health::router());
    lambda_http::run(app::build(routes, state)).await
}
