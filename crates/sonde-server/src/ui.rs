//! The web UI, served from assets embedded at build time (see `build.rs`).

use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn asset(path: &str) -> Option<&'static [u8]> {
    embedded::ASSETS.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
}

fn respond(path: &str, bytes: &'static [u8]) -> Response {
    let mut r = Response::new(Body::from(bytes));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    // Hashed asset names never change content; the page itself must always be fresh.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'",
        ),
    );
    r
}

/// `GET /`: the UI's page.
pub(crate) async fn index() -> Response {
    match asset("index.html") {
        Some(b) => respond("index.html", b),
        None => (
            StatusCode::NOT_FOUND,
            "This sonde binary was built without its web UI. Build it with `make run` (or `cd web && npm ci && npm run build`, then rebuild).\n",
        )
            .into_response(),
    }
}

/// `GET /assets/{file}` and other UI files.
pub(crate) async fn file(Path(path): Path<String>) -> Response {
    let path = format!("assets/{path}");
    match asset(&path) {
        Some(b) => respond(&path, b),
        None => (StatusCode::NOT_FOUND, "no such UI asset\n").into_response(),
    }
}

/// Whether the UI was built into this binary.
pub fn ui_built() -> bool {
    asset("index.html").is_some()
}
