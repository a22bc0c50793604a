//! Where remote bytes come from: S3 through the `object_store` crate;
//! plain HTTP(S) and the Hugging Face Hub through `reqwest` (`http`: one
//! ranged GET; here, the Hub's API for the revision and the file list, and
//! its `resolve` URLs for the bytes, following the redirect to the CDN once
//! per file).
//!
//! Every call is one attempt; `object` retries. A ranged GET streams its
//! body into a sink as it arrives, and fails with [`FetchError::Stalled`]
//! when no byte arrives for the stall timeout.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{GetOptions, GetRange, ObjectStore};
use serde_json::Value;

pub use super::fetch::{FetchError, HTTP_CREDENTIALS, HUB_CREDENTIALS, Meta, S3_CREDENTIALS};
use super::http::{self, Expect};
use super::names::redact;

/// One remote object's address. Its `Debug` shows URLs without their
/// query strings (a signed URL's credentials).
pub enum Target {
    /// An S3 object, by its path in the store.
    Store {
        store: Arc<dyn ObjectStore>,
        path: StorePath,
    },
    /// An HTTP(S) file.
    Http {
        client: reqwest::Client,
        /// The URL, query string included: never shown as it is.
        url: String,
        /// `Last-Modified` seen at mount: sent as `If-Unmodified-Since`
        /// when the ETag is weak or missing, and compared with every
        /// answer's.
        last_modified: Option<String>,
    },
    /// A file of a Hub repository at a commit.
    Hub {
        hub: Arc<Hub>,
        /// `{endpoint}/{repo}/resolve/{commit}/{file}`.
        resolve: String,
        /// Where `resolve` redirected to (the CDN), once known.
        cdn: Mutex<Option<String>>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Store { path, .. } => write!(f, "Store({path})"),
            Target::Http { url, .. } => write!(f, "Http({})", redact(url)),
            Target::Hub { resolve, .. } => write!(f, "Hub({})", redact(resolve)),
        }
    }
}

/// A client for HTTP(S) files and the Hub: connecting is bounded by
/// `connect`; every other wait is bounded by the caller.
pub fn client(connect: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .user_agent(concat!("gyrofs/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.without_url().to_string())
}

impl Target {
    /// Fetch `range`, conditional on `etag` when given, handing the body to
    /// `sink` piece by piece as it arrives. Returns what the response said
    /// about the object. A response for another version (another ETag, or
    /// size when `size` is given) is refused before any of its bytes reach
    /// `sink`, even from a server that ignores If-Match.
    pub async fn get(
        &self,
        range: Range<u64>,
        etag: Option<&str>,
        size: Option<u64>,
        stall: Duration,
        sink: &mut (dyn FnMut(&[u8]) -> Result<(), FetchError> + Send),
    ) -> Result<Meta, FetchError> {
        match self {
            Target::Store { store, path } => {
                let opts = GetOptions {
                    range: Some(GetRange::Bounded(range.clone())),
                    // A weak ETag never matches If-Match (strong
                    // comparison): it is compared on the answer instead.
                    if_match: etag.filter(|e| !http::is_weak(e)).map(str::to_string),
                    ..Default::default()
                };
                let got = tokio::time::timeout(stall, store.get_opts(path, opts))
                    .await
                    .map_err(|_| FetchError::Stalled(stall))?
                    .map_err(store_error)?;
                let meta = Meta {
                    size: got.meta.size,
                    etag: got.meta.e_tag.clone(),
                    last_modified: None,
                };
                if let (Some(want), Some(have)) = (etag, &meta.etag)
                    && want != have
                {
                    return Err(FetchError::Changed(format!("its ETag is now {have}")));
                }
                if size.is_some_and(|s| s != meta.size) {
                    return Err(FetchError::Changed(format!(
                        "its size is now {}",
                        meta.size
                    )));
                }
                let mut body = got.into_stream();
                loop {
                    match tokio::time::timeout(stall, body.next()).await {
                        Err(_) => return Err(FetchError::Stalled(stall)),
                        Ok(None) => return Ok(meta),
                        Ok(Some(Err(e))) => return Err(store_error(e)),
                        Ok(Some(Ok(bytes))) => sink(&bytes)?,
                    }
                }
            }
            Target::Http {
                client,
                url,
                last_modified,
            } => {
                let expect = Expect {
                    etag,
                    last_modified: last_modified.as_deref(),
                    size,
                };
                let (meta, _) =
                    http::ranged_get(client.get(url), url, range, expect, stall, sink).await?;
                Ok(meta)
            }
            Target::Hub { hub, resolve, cdn } => {
                let known = cdn.lock().unwrap().clone();
                let url = known.clone().unwrap_or_else(|| resolve.clone());
                let mut delivered = 0u64;
                let mut counting = |b: &[u8]| {
                    delivered += b.len() as u64;
                    sink(b)
                };
                let result = hub
                    .get_range(&url, range.clone(), size, stall, &mut counting)
                    .await;
                match result {
                    // A CDN link can expire (then it answers 403, 404 or
                    // 410, or fails otherwise): resolve again, once, before
                    // the file is declared changed or denied, if nothing
                    // arrived (else the caller resumes where the bytes end).
                    Err(
                        FetchError::Other(_)
                        | FetchError::Busy(..)
                        | FetchError::Changed(_)
                        | FetchError::Denied(..),
                    ) if known.is_some() && delivered == 0 => {
                        *cdn.lock().unwrap() = None;
                        let (meta, landed) =
                            hub.get_range(resolve, range, size, stall, sink).await?;
                        *cdn.lock().unwrap() = Some(landed);
                        Ok(meta)
                    }
                    Err(e) => Err(e),
                    Ok((meta, landed)) => {
                        *cdn.lock().unwrap() = Some(landed);
                        Ok(meta)
                    }
                }
            }
        }
    }
}

/// `s` on one line (servers' error bodies are XML or JSON with newlines),
/// at most 300 characters.
pub fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match joined.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &joined[..at]),
        None => joined,
    }
}

pub fn store_error(e: object_store::Error) -> FetchError {
    use object_store::Error as E;
    match e {
        E::Precondition { .. } | E::NotModified { .. } => {
            FetchError::Changed("its ETag no longer matches".into())
        }
        E::NotFound { .. } => FetchError::Changed("it is gone".into()),
        E::PermissionDenied { path, .. } => {
            FetchError::Denied(format!("{path}: HTTP 403"), S3_CREDENTIALS)
        }
        E::Unauthenticated { path, .. } => {
            FetchError::Denied(format!("{path}: HTTP 401"), S3_CREDENTIALS)
        }
        e => {
            let text = one_line(&e.to_string());
            if text.contains("not partial")
                || text.contains("non-partial")
                || text.contains("NotPartial")
                || text.contains("Range request not supported")
            {
                FetchError::NoRange
            } else {
                FetchError::Other(text)
            }
        }
    }
}

/// A Hugging Face Hub endpoint with its credentials (its `Debug` does not
/// show the token).
pub struct Hub {
    pub endpoint: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// One file of a repository at a commit, from the tree listing.
#[derive(Debug, Clone)]
pub struct HubFile {
    pub path: String,
    pub size: u64,
    /// The LFS sha256, or the git blob id of a small file.
    pub oid: String,
}

impl Hub {
    pub fn new(endpoint: &str, token: Option<String>, connect: Duration) -> Result<Hub, String> {
        let client = client(connect)?;
        Ok(Hub {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            client,
        })
    }

    /// `req` to `url` with the token, if the URL is the Hub's own (a CDN
    /// link carries its own authorization).
    fn authed(&self, url: &str, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) if url.starts_with(&format!("{}/", self.endpoint)) => req.bearer_auth(t),
            _ => req,
        }
    }

    async fn get_json(
        &self,
        url: &str,
        timeout: Duration,
    ) -> Result<(Value, Option<String>), String> {
        let resp = tokio::time::timeout(timeout, self.authed(url, self.client.get(url)).send())
            .await
            .map_err(|_| format!("GET {url}: no answer within {timeout:?}"))?
            .map_err(|e| format!("GET {url}: {}", e.without_url()))?;
        let status = resp.status();
        let next = resp
            .headers()
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link);
        let code = resp
            .headers()
            .get("x-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = tokio::time::timeout(timeout, resp.bytes())
            .await
            .map_err(|_| format!("GET {url}: no answer within {timeout:?}"))?
            .map_err(|e| format!("GET {url}: {}", e.without_url()))?;
        if !status.is_success() {
            let why = match (status.as_u16(), code.as_deref()) {
                (401, _) => "not authorized (set HF_TOKEN, or log in with huggingface-cli, for a private or gated repository)".to_string(),
                (403, _) => "access denied: the token cannot read this repository (check HF_TOKEN; a gated repository needs its terms accepted on the Hub)".to_string(),
                (_, Some("RepositoryNotFound")) => "no such repository".to_string(),
                (_, Some("RevisionNotFound")) => "no such revision".to_string(),
                (s, _) => format!("HTTP {s}"),
            };
            return Err(format!("{url}: {why}"));
        }
        let v = serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))?;
        Ok((v, next))
    }

    /// The commit that `revision` names now.
    pub async fn commit(
        &self,
        repo: &str,
        revision: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let url = format!(
            "{}/api/models/{repo}/revision/{}",
            self.endpoint,
            encode(revision)
        );
        let (v, _) = self.get_json(&url, timeout).await?;
        v.get("sha")
            .and_then(Value::as_str)
            .filter(|s| is_commit(s))
            .map(str::to_string)
            .ok_or_else(|| format!("{url}: no commit sha in the answer"))
    }

    /// Every file of `repo` at `commit` (all pages of the tree listing).
    pub async fn files(
        &self,
        repo: &str,
        commit: &str,
        timeout: Duration,
    ) -> Result<Vec<HubFile>, String> {
        let mut url = Some(format!(
            "{}/api/models/{repo}/tree/{commit}?recursive=true",
            self.endpoint
        ));
        let mut files = Vec::new();
        while let Some(u) = url.take() {
            let (v, next) = self.get_json(&u, timeout).await?;
            let list = v.as_array().ok_or_else(|| format!("{u}: not a list"))?;
            for e in list {
                if e.get("type").and_then(Value::as_str) != Some("file") {
                    continue;
                }
                let path = e.get("path").and_then(Value::as_str);
                let size = e.get("size").and_then(Value::as_u64);
                let oid = e
                    .get("lfs")
                    .and_then(|l| l.get("oid"))
                    .or_else(|| e.get("oid"))
                    .and_then(Value::as_str);
                match (path, size, oid) {
                    (Some(p), Some(s), Some(o)) => files.push(HubFile {
                        path: p.to_string(),
                        size: s,
                        oid: o.to_string(),
                    }),
                    _ => return Err(format!("{u}: an entry lacks path, size or oid: {e}")),
                }
            }
            url = next;
        }
        Ok(files)
    }

    pub fn resolve_url(&self, repo: &str, commit: &str, file: &str) -> String {
        let path: Vec<String> = file.split('/').map(encode).collect();
        format!(
            "{}/{repo}/resolve/{commit}/{}",
            self.endpoint,
            path.join("/")
        )
    }

    /// One ranged GET of `url` (redirects followed). Returns the object's
    /// metadata and the URL that answered.
    async fn get_range(
        &self,
        url: &str,
        range: Range<u64>,
        size: Option<u64>,
        stall: Duration,
        sink: &mut (dyn FnMut(&[u8]) -> Result<(), FetchError> + Send),
    ) -> Result<(Meta, String), FetchError> {
        let req = self.authed(url, self.client.get(url));
        let expect = Expect {
            size,
            ..Expect::default()
        };
        match http::ranged_get(req, url, range, expect, stall, sink).await {
            Err(FetchError::Denied(why, _)) => Err(FetchError::Denied(why, HUB_CREDENTIALS)),
            got => got,
        }
    }
}

/// The `rel="next"` URL of a `Link` header value.
fn next_link(v: &str) -> Option<String> {
    v.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// Percent-encode a path segment.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A full 40-hex-digit commit id?
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_and_encoding() {
        assert_eq!(
            next_link("<http://h/api/x?cursor=a>; rel=\"next\"").as_deref(),
            Some("http://h/api/x?cursor=a")
        );
        assert_eq!(next_link("<http://h/y>; rel=\"prev\""), None);
        assert_eq!(encode("refs/pr/1"), "refs%2Fpr%2F1");
        assert!(is_commit(&"a".repeat(40)));
        assert!(!is_commit("main"));
    }
}
