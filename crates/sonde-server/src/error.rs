//! The HTTP edge's errors: a small set of statuses, each with a message a user can act on.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to a client: status, message, and for overload a `Retry-After`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, naming the field or limit.
    pub message: String,
    /// Seconds after which a retry may succeed (sent as `Retry-After`).
    pub retry_after: Option<u64>,
    /// For a mistake in an expression: its character offset, answered as `"position"`.
    pub position: Option<usize>,
}

impl ApiError {
    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            retry_after: None,
            position: None,
        }
    }
    /// A 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            message: message.into(),
            retry_after: None,
            position: None,
        }
    }
    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            retry_after: None,
            position: None,
        }
    }
    /// The 404 for a dataset that does not exist.
    pub fn no_such_dataset(ds: &sonde_model::DatasetName) -> Self {
        Self::not_found(format!("dataset \"{ds}\" does not exist"))
    }
    /// A 401: no API key, or an unknown one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
            retry_after: None,
            position: None,
        }
    }
    /// A 403: a key without the scope or dataset asked for.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
            retry_after: None,
            position: None,
        }
    }
    /// A 429 naming the limit, with when to retry.
    pub fn too_many(message: impl Into<String>, retry_after_s: u64) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: message.into(),
            retry_after: Some(retry_after_s),
            position: None,
        }
    }
    /// A 415.
    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: message.into(),
            retry_after: None,
            position: None,
        }
    }
    /// A 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            retry_after: None,
            position: None,
        }
    }
}

impl From<sonde_storage::Error> for ApiError {
    fn from(e: sonde_storage::Error) -> Self {
        use sonde_storage::Error as E;
        match e {
            E::Backpressure { .. } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                retry_after: Some(1),
                position: None,
            },
            E::DiskFull(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                retry_after: Some(5),
                position: None,
            },
            E::WalFailed(_) | E::ShuttingDown => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                retry_after: Some(5),
                position: None,
            },
            // Sent to the wrong node of a cluster: retrying here will not help, another node will.
            E::NotOwner { .. } | E::Role { .. } | E::EpochMoved { .. } => ApiError {
                status: StatusCode::MISDIRECTED_REQUEST,
                message: e.to_string(),
                retry_after: None,
                position: None,
            },
            other => {
                tracing::error!(error = %other, "storage error");
                ApiError::internal(other.to_string())
            }
        }
    }
}

impl From<sonde_ingest::BodyError> for ApiError {
    fn from(e: sonde_ingest::BodyError) -> Self {
        use sonde_ingest::BodyError as E;
        let status = match e {
            E::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            E::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            E::Malformed(_) => StatusCode::BAD_REQUEST,
        };
        ApiError {
            status,
            message: e.to_string(),
            retry_after: None,
            position: None,
        }
    }
}

impl From<sonde_model::EventError> for ApiError {
    fn from(e: sonde_model::EventError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.position {
            Some(p) => json!({ "error": self.message, "position": p }),
            None => json!({ "error": self.message }),
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}
