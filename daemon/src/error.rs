//! The error a client of the HTTP API gets: one variant per code of `{"error":{"code","message"}}`
//! (docs in [`crate::api`]), its HTTP status, and how the run hub's and the store's failures map
//! onto it. Its own module so that the hub (`runs`) and the routes (`server`) both use it without
//! depending on each other.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::api::{ErrorBody, ErrorDetail, MAX_BODY_BYTES};

/// An error a client gets, as `{"error":{"code","message"}}`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// No or wrong bearer token.
    #[error("a valid bearer token is required (Authorization: Bearer <token>; the token is in the daemon's token file)")]
    Unauthorized,
    /// Unknown run, checkpoint or route.
    #[error("{0}")]
    NotFound(String),
    /// The request is wrong (malformed JSON, bad config, bad parameter).
    #[error("{0}")]
    BadRequest(String),
    /// The request does not fit the state (a second run, resuming a running run).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than the limit.
    #[error("request body larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    /// Too many requests of this kind are being served; try again shortly.
    #[error("{0}")]
    Busy(String),
    /// The daemon failed.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::Busy(_) => "busy",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if matches!(self, ApiError::Busy(_)) {
            response.insert_header(("Retry-After", "1"));
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code().into(),
                message: self.to_string(),
            },
        })
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}
