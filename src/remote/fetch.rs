//! What one fetch attempt answers, whatever the protocol (`store` for S3
//! and the Hub, `http` for ranged GETs): why it failed ([`FetchError`]),
//! what the server says of an object ([`Meta`]), and where each protocol's
//! credentials come from.

use std::time::Duration;

/// Why one attempt to fetch a range failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The object is not the version seen at mount (If-Match failed, or it
    /// is gone).
    #[error("changed since it was mounted ({0})")]
    Changed(String),
    /// The server answered a range request with the whole object.
    #[error(
        "the server does not support range requests (it answered a ranged GET with the whole object)"
    )]
    NoRange,
    /// No byte arrived within the stall timeout.
    #[error("no data for {0:?}")]
    Stalled(Duration),
    /// 401 or 403: the credentials do not allow it. Not retried. With
    /// where this protocol's credentials come from.
    #[error("{0}: access denied; check the credentials ({1})")]
    Denied(String, &'static str),
    /// The local cache cannot take the bytes (a full disk, an I/O error).
    /// Not retried: the network is not at fault.
    #[error("{0}")]
    Local(String),
    /// An error whose answer asked to wait before trying again
    /// (`Retry-After`).
    #[error("{0} (the server asks to retry after {secs} s)", secs = .1.as_secs())]
    Busy(String, Duration),
    /// Anything else (connection refused, 5xx, ...), retried.
    #[error("{0}")]
    Other(String),
}

/// Where each protocol's credentials come from (docs/REMOTE.md).
pub const S3_CREDENTIALS: &str = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE; --no-sign-request for a public bucket";
pub const HUB_CREDENTIALS: &str =
    "HF_TOKEN, or huggingface-cli login; a gated repository needs its terms accepted on the Hub";
pub const HTTP_CREDENTIALS: &str = "the server refuses this URL; a signed URL may have expired";

impl FetchError {
    /// Worth another attempt?
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            FetchError::Stalled(_) | FetchError::Other(_) | FetchError::Busy(..)
        )
    }

    /// The wait the server asked for, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Busy(_, wait) => Some(*wait),
            _ => None,
        }
    }
}

/// What the server says about an object.
#[derive(Debug, Clone)]
pub struct Meta {
    pub size: u64,
    /// ETag (S3, HTTP) or content hash (Hub), quoted as the server sent it.
    pub etag: Option<String>,
    /// `Last-Modified` as the server sent it (HTTP, Hub).
    pub last_modified: Option<String>,
}
