//! The web UI, served from assets embedded at build time (see `build.rs`), or — for work on
//! the UI — from a directory read at each request (`--ui-dir`, e.g. `web/dist` after
//! `npm run build`), so a UI change needs no rebuild of the binary.

use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;
use std::sync::Arc;

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

/// A UI file: from `--ui-dir` when set (only plain relative names: no `..`, no absolute
/// paths), else embedded.
fn load(state: &AppState, path: &str) -> Option<Cow<'static, [u8]>> {
    match &state.config.ui_dir {
        Some(dir) => {
            let rel = std::path::Path::new(path);
            let plain = rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
            plain
                .then(|| std::fs::read(dir.join(rel)).ok())
                .flatten()
                .map(Cow::Owned)
        }
        None => asset(path).map(Cow::Borrowed),
    }
}

fn respond(path: &str, bytes: Cow<'static, [u8]>) -> Response {
    let mut r = Response::new(match bytes {
        Cow::Borrowed(b) => Body::from(b),
        Cow::Owned(v) => Body::from(v),
    });
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
pub(crate) async fn index(State(state): State<Arc<AppState>>) -> Response {
    match load(&state, "index.html") {
        Some(b) => respond("index.html", b),
        None => (
            StatusCode::NOT_FOUND,
            "This sonde binary was built without its web UI. Build it with `make run` (or `cd web && npm ci && npm run build`, then rebuild).\n",
        )
            .into_response(),
    }
}

/// `GET /assets/{file}` and other UI files.
pub(crate) async fn file(State(state): State<Arc<AppState>>, Path(path): Path<String>) -> Response {
    let path = format!("assets/{path}");
    match load(&state, &path) {
        Some(b) => respond(&path, b),
        None => (StatusCode::NOT_FOUND, "no such UI asset\n").into_response(),
    }
}

/// Whether the UI was built into this binary.
pub fn ui_built() -> bool {
    asset("index.html").is_some()
}
