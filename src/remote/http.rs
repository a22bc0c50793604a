//! One ranged GET over plain HTTP(S), for `https://` sources and for the
//! Hugging Face Hub's resolve URLs and CDN (S3 goes through
//! `object_store`, in `store`).
//!
//! - Preconditions: a strong ETag seen at mount is sent as `If-Match`. A
//!   weak one (`W/"..."`) is not: `If-Match` compares strongly, so a
//!   compliant server would refuse every request (412). Without a strong
//!   ETag, the `Last-Modified` seen at mount is sent as
//!   `If-Unmodified-Since`. Whatever was sent, the answer's own ETag,
//!   `Last-Modified`, size and `Content-Range` are compared with what was
//!   seen at mount before a byte of it is used.
//! - Statuses: 412, 404 and 410 mean the object changed (or is gone);
//!   401 and 403 are [`FetchError::Denied`], not retried; a `Retry-After`
//!   on any other error is handed up ([`FetchError::Busy`]).
//! - URLs in errors are [`redact`]ed: a signed URL's query string holds
//!   its credentials.

use std::ops::Range;
use std::time::Duration;

use futures::StreamExt;

use super::fetch::{FetchError, HTTP_CREDENTIALS, Meta};
use super::names::redact;

/// What the answer must show: the version seen at mount (what is known of
/// it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect<'a> {
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
    pub size: Option<u64>,
}

/// A weak ETag (`W/"..."`): never sent in `If-Match`.
pub fn is_weak(etag: &str) -> bool {
    etag.starts_with("W/")
}

/// One ranged GET: `req` (a GET of `url`, with whatever authorization it
/// needs) for `range`, conditional on `expect`, its body handed to `sink`
/// as it arrives. Returns what the answer says of the object and the URL
/// that answered (after redirects).
pub async fn ranged_get(
    req: reqwest::RequestBuilder,
    url: &str,
    range: Range<u64>,
    expect: Expect<'_>,
    stall: Duration,
    sink: &mut (dyn FnMut(&[u8]) -> Result<(), FetchError> + Send),
) -> Result<(Meta, String), FetchError> {
    let shown = redact(url);
    let mut req = req.header(
        reqwest::header::RANGE,
        format!("bytes={}-{}", range.start, range.end - 1),
    );
    match (expect.etag, expect.last_modified) {
        (Some(etag), _) if !is_weak(etag) => req = req.header(reqwest::header::IF_MATCH, etag),
        (_, Some(date)) => req = req.header(reqwest::header::IF_UNMODIFIED_SINCE, date),
        _ => {}
    }
    let resp = tokio::time::timeout(stall, req.send())
        .await
        .map_err(|_| FetchError::Stalled(stall))?
        .map_err(|e| FetchError::Other(format!("GET {shown}: {}", e.without_url())))?;
    let status = resp.status().as_u16();
    match status {
        206 => {}
        200 => return Err(FetchError::NoRange),
        412 => {
            return Err(FetchError::Changed(format!(
                "GET {shown}: HTTP 412, it is not the version seen at mount"
            )));
        }
        404 | 410 => {
            return Err(FetchError::Changed(format!(
                "GET {shown}: HTTP {status}, it is gone"
            )));
        }
        401 | 403 => {
            return Err(FetchError::Denied(
                format!("GET {shown}: HTTP {status}"),
                HTTP_CREDENTIALS,
            ));
        }
        s => {
            let why = format!("GET {shown}: HTTP {s}");
            return Err(match retry_after(resp.headers()) {
                Some(wait) => FetchError::Busy(why, wait),
                None => FetchError::Other(why),
            });
        }
    }
    let landed = resp.url().to_string();
    let header = |name: reqwest::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // `bytes START-END/TOTAL`, for exactly the range asked (cut at the end
    // of the object: the first GET of a file does not know its size).
    let content_range = header(reqwest::header::CONTENT_RANGE).and_then(|v| {
        let (span, total) = v.strip_prefix("bytes ")?.split_once('/')?;
        let (a, b) = span.split_once('-')?;
        Some((
            a.parse::<u64>().ok()?,
            b.parse::<u64>().ok()?,
            total.parse::<u64>().ok()?,
        ))
    });
    let (total, want) = match content_range {
        Some((a, b, total)) if a == range.start && b + 1 == range.end.min(total) => {
            (total, b + 1 - a)
        }
        _ => {
            return Err(FetchError::Other(format!(
                "GET {shown}: the answer is not bytes {}..{}",
                range.start, range.end
            )));
        }
    };
    let meta = Meta {
        size: total,
        etag: header(reqwest::header::ETAG),
        last_modified: header(reqwest::header::LAST_MODIFIED),
    };
    if expect.size.is_some_and(|s| s != total) {
        return Err(FetchError::Changed(format!("its size is now {total}")));
    }
    if let (Some(want), Some(have)) = (expect.etag, &meta.etag)
        && want != have
    {
        return Err(FetchError::Changed(format!("its ETag is now {have}")));
    }
    if let (Some(want), Some(have)) = (expect.last_modified, &meta.last_modified)
        && want != have
    {
        return Err(FetchError::Changed(format!("it was modified at {have}")));
    }
    let mut body = resp.bytes_stream();
    let mut got = 0u64;
    loop {
        match tokio::time::timeout(stall, body.next()).await {
            Err(_) => return Err(FetchError::Stalled(stall)),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(FetchError::Other(format!(
                    "GET {shown}: {}",
                    e.without_url()
                )));
            }
            Ok(Some(Ok(b))) => {
                got += b.len() as u64;
                sink(&b)?;
            }
        }
    }
    if got != want {
        return Err(FetchError::Other(format!(
            "GET {shown}: {got} bytes for a range of {want}"
        )));
    }
    Ok((meta, landed))
}

/// The wait a `Retry-After` header asks for: seconds, or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = http_date(v)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37
/// GMT`, the form RFC 9110 requires senders to use).
fn http_date(s: &str) -> Option<u64> {
    let mut it = s.split_whitespace();
    let (_, day, month, year, time, zone) = (
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
    );
    if zone != "GMT" || it.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|&x| x == month)? as i64 + 1;
    let d: i64 = day.parse().ok()?;
    let y: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, sec) = (hms.next()??, hms.next()??, hms.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    u64::try_from(days * 86400 + h * 3600 + mi * 60 + sec).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Thu, 01 Jan 1970 00:00:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        assert!(is_weak("W/\"x\"") && !is_weak("\"x\""));
    }
}
