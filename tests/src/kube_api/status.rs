//! Errors of the test API server and their wire form: a `meta/v1` `Status` with the code,
//! reason and message the real API server uses, so clients (kube-rs's `ErrorResponse`)
//! see what they would see from a cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusDetails};

use super::objects::ApiObject;
use super::store::ObjectKey;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: &'static str, name: String },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: &'static str, name: String },
    #[error("{kind} \"{name}\" is invalid: {field}: {message}")]
    Invalid { kind: &'static str, name: String, field: String, message: String },
    #[error("operation cannot be fulfilled on {resource} \"{name}\": {message}")]
    Conflict { resource: &'static str, name: String, message: String },
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: u64, oldest: u64 },
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion { requested: u64, current: u64 },
    #[error("{0}")]
    BadRequest(String),
    #[error("the body of the request was in an unknown format - accepted media types include: {accepted}")]
    UnsupportedMediaType { accepted: &'static str },
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("Unauthorized")]
    Unauthorized,
}

impl ApiError {
    pub(crate) fn not_found<K: ApiObject>(key: &ObjectKey) -> ApiError {
        ApiError::NotFound { resource: K::PLURAL, name: key.1.clone() }
    }

    pub fn code(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::NotFound { .. } | ApiError::NoRoute => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Gone { .. } => 410,
            ApiError::UnsupportedMediaType { .. } => 415,
            ApiError::Invalid { .. } => 422,
            ApiError::TooLargeResourceVersion { .. } => 504,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Gone { .. } => "Expired",
            ApiError::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::TooLargeResourceVersion { .. } => "Timeout",
        }
    }

    /// The `Status` object the real API server answers with.
    pub(crate) fn to_status(&self) -> Status {
        let details = match self {
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name, .. } => {
                Some(StatusDetails { name: Some(name.clone()), kind: Some(resource.to_string()), ..Default::default() })
            }
            ApiError::Invalid { kind, name, .. } => {
                Some(StatusDetails { name: Some(name.clone()), kind: Some(kind.to_string()), ..Default::default() })
            }
            _ => None,
        };
        Status {
            status: Some("Failure".into()),
            code: Some(self.code().into()),
            reason: Some(self.reason().into()),
            message: Some(self.to_string()),
            details,
            ..Default::default()
        }
    }
}
