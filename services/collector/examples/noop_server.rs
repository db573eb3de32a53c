//! The benchmark ceiling: an axum server that reads the body and answers like the collector, with
//! no parsing, no auth and no broker. `scripts/bench.sh` runs it beside the collector.

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("NOOP_ADDR").unwrap_or_else(|_| "127.0.0.1:18081".into());
    let app = Router::new().route(
        "/v1/{call}",
        post(|body: Bytes| async move {
            std::hint::black_box(body);
            (
                [("content-type", "application/json")],
                r#"{"success":true}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
