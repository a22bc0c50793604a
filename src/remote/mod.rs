//! Remote sources: `s3://bucket/prefix`, `hf://org/model[@revision]` and
//! `https://host/path/file` (docs/REMOTE.md).
//!
//! [`prepare`] lists the remote files and lays them out as a local folder
//! (a tree of symlinks, one per remote file, into the block cache) that
//! `source::open` reads like any other SOURCE. Each link points at the
//! object's sparse cache file, which `store::SourceFile` maps as it maps a
//! local file. `prepare` returns the folder with a `store::Opener` that
//! knows each cache file's [`RemoteObject`] (a `store::Fetcher`); the caller
//! passes it to `source::open`, and every borrow of a file's bytes first
//! makes them local. Views, kernels and `convert` never know where the
//! bytes came from.
//!
//! - `store`: the protocols (S3 through `object_store`, the Hub through
//!   `reqwest`); `http`: one ranged GET over HTTP(S) (https sources, the
//!   Hub's files); `cache`: the block cache on disk; `names`: cache file
//!   names and URLs as messages show them; `object`: one remote object
//!   behind the cache (fetch, single flight, read-ahead, retries, change
//!   detection).

pub mod cache;
pub mod fetch;
pub mod http;
pub mod names;
pub mod object;
pub mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

pub use crate::error::RemoteError;
use crate::store::{Fetcher, Opener};
use cache::{BLOCK, Cache, Entry};
pub use object::{Limits, RemoteObject};
use store::{Hub, Target};

/// What is fetched of a `.gguf` file at open (of any other file: one block).
pub const FIRST_GGUF: u64 = 1 << 20;

/// Default cache size: 64 GiB.
pub const DEFAULT_CACHE_SIZE: u64 = 64 << 30;
/// Default stall timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRIES: u32 = 3;

/// Settings for remote sources (the command line's `--cache-dir` and
/// friends).
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Default: `$XDG_CACHE_HOME/gyrofs` or `~/.cache/gyrofs`.
    pub cache_dir: Option<PathBuf>,
    /// `--cache-size`; default ([`None`]): [`DEFAULT_CACHE_SIZE`], or 90%
    /// of what the cache directory's disk can hold if that is less.
    pub cache_size: Option<u64>,
    /// S3-compatible endpoint (MinIO, R2, Ceph, ...); default: AWS, or
    /// `AWS_ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    /// Send S3 requests unsigned (public buckets).
    pub no_sign_request: bool,
    pub limits: Limits,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            cache_dir: None,
            cache_size: None,
            endpoint_url: None,
            no_sign_request: false,
            limits: Limits {
                stall: DEFAULT_TIMEOUT,
                retries: DEFAULT_RETRIES,
            },
        }
    }
}

/// A refusal at mount. The URL is shown without its query string.
fn fail<T>(url: &str, why: impl Into<String>) -> Result<T, RemoteError> {
    Err(RemoteError {
        url: names::redact(url),
        why: store::one_line(&why.into()),
    })
}

/// Largest remote source, all files together (16 TiB): the cache's
/// per-block state is then at most 256 MiB.
const MAX_SOURCE: u64 = 1 << 44;

/// A parsed SOURCE URL (its `Debug` shows an http(s) URL without its
/// query string).
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    S3 {
        bucket: String,
        key: String,
    },
    Http {
        url: String,
    },
    /// `path`: a file or folder inside the repository ("" for all of it).
    Hub {
        repo: String,
        revision: String,
        path: String,
    },
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::S3 { bucket, key } => write!(f, "S3({bucket}/{key})"),
            Location::Http { url } => write!(f, "Http({})", names::redact(url)),
            Location::Hub {
                repo,
                revision,
                path,
            } => write!(f, "Hub({repo}@{revision}/{path})"),
        }
    }
}

/// Is SOURCE a URL gyrofs fetches (rather than a local path)?
pub fn is_remote(source: &Path) -> bool {
    let s = source.to_string_lossy();
    ["s3://", "hf://", "http://", "https://"]
        .iter()
        .any(|p| s.starts_with(p))
}

/// Parse a SOURCE URL.
pub fn parse_url(url: &str) -> Result<Location, RemoteError> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return fail(url, "no bucket: use s3://BUCKET/PREFIX");
        }
        return Ok(Location::S3 {
            bucket: bucket.to_string(),
            key: key.to_string(),
        });
    }
    if let Some(rest) = url.strip_prefix("hf://") {
        // hf://ORG/MODEL[@REVISION][/PATH]
        let rest = rest.strip_prefix("models/").unwrap_or(rest);
        let mut parts = rest.splitn(3, '/');
        let (org, model) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = parts.next().unwrap_or("").trim_matches('/');
        let (model, revision) = model.split_once('@').unwrap_or((model, "main"));
        if org.is_empty() || model.is_empty() || revision.is_empty() {
            return fail(
                url,
                "use hf://ORG/MODEL, hf://ORG/MODEL@REVISION or hf://ORG/MODEL@REVISION/PATH",
            );
        }
        return Ok(Location::Hub {
            repo: format!("{org}/{model}"),
            revision: revision.replace("%2F", "/").replace("%2f", "/"),
            path: path.to_string(),
        });
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        if url.ends_with('/') {
            return fail(
                url,
                "an http(s) source names one file (servers list no folders); for a folder use s3:// or hf://",
            );
        }
        return Ok(Location::Http {
            url: url.to_string(),
        });
    }
    fail(url, "not a remote source (s3://, hf://, http://, https://)")
}

/// The default cache directory: `$XDG_CACHE_HOME/gyrofs`, else
/// `~/.cache/gyrofs`, else (no HOME: fstab, systemd) `/tmp/gyrofs-cache`
/// if it is private to this user ([`private_dir`]), else why not.
pub fn default_cache_dir() -> Result<PathBuf, String> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("gyrofs"));
    }
    match std::env::var_os("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".cache/gyrofs")),
        None => {
            let dir = std::env::temp_dir().join("gyrofs-cache");
            private_dir(&dir)
                .map(|()| dir)
                .map_err(|e| format!("{e}; without HOME give --cache-dir DIR (-o cache_dir=DIR)"))
        }
    }
}

/// Make `dir` (mode 0700) if it is missing, else accept it only as a real
/// folder (not a link) owned by this user and not writable by group or
/// others: in a world-writable /tmp, another user could have made it first
/// to plant blocks in the cache.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cache directory {}: {e}", dir.display())),
    }
    let m = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cache directory {}: {e}", dir.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !m.file_type().is_dir() || m.uid() != me || m.mode() & 0o022 != 0 {
        return Err(format!(
            "cache directory {} is not a private folder of this user (owner uid {}, mode {:o}, {})",
            dir.display(),
            m.uid(),
            m.mode() & 0o7777,
            if m.file_type().is_dir() {
                "a folder"
            } else {
                "not a folder"
            }
        ));
    }
    Ok(())
}

/// One remote file found by listing.
struct Listed {
    /// Relative name in the source (`original/model.safetensors`).
    name: String,
    /// What names the object whatever URL reached it (its cache key, with
    /// `version`).
    identity: String,
    size: u64,
    etag: Option<String>,
    target: Target,
    /// The version in the cache key (the ETag as the server sent it, or
    /// the Hub's file hash).
    version: String,
    /// The first block, when listing already fetched it.
    first: Option<Vec<u8>>,
}

/// A SOURCE located for `source::open`: a local path as it is, or a remote
/// source laid out in the block cache.
#[derive(Debug)]
pub struct Located {
    /// The local path to open: the source itself, or a folder of links to
    /// cache files (one link for a one-file remote source).
    pub path: PathBuf,
    /// Opens its files: plainly, or the cache files with their remote
    /// objects behind them.
    pub opener: Opener,
    /// What the user should know (one line each): a `--cache-size` larger
    /// than the cache disk's free space.
    pub warnings: Vec<String>,
}

/// Locate SOURCE: a local path is opened as it is; a URL (`s3://`, `hf://`,
/// `http(s)://`) is listed and laid out in the block cache ([`prepare`]).
pub fn locate(source: &Path, opts: &RemoteOptions) -> Result<Located, RemoteError> {
    if is_remote(source) {
        return prepare(&source.to_string_lossy(), opts);
    }
    Ok(Located {
        path: source.to_path_buf(),
        opener: Opener::local(),
        warnings: Vec::new(),
    })
}

/// Open the remote source `url`: list it, fetch the first block of every
/// file (in parallel), and return the local path to hand to `source::open`
/// (a folder, or a file for a one-file source) with the [`Opener`] that
/// backs its files by their remote objects.
pub fn prepare(url: &str, opts: &RemoteOptions) -> Result<Located, RemoteError> {
    let location = parse_url(url)?;
    let dir = match opts.cache_dir.clone() {
        Some(dir) => dir,
        None => default_cache_dir().or_else(|e| fail(url, e))?,
    };
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let cache = Cache::open(&dir, opts.cache_size.unwrap_or(DEFAULT_CACHE_SIZE))
        .or_else(|e| fail(url, format!("cache directory {}: {e}", dir.display())))?;
    // The cache against its disk (free space plus what the cache holds): a
    // --cache-size larger than that would fill the disk before it evicts,
    // and reads would then fail (EIO, "the cache disk is full"). Given,
    // it is warned about, not refused (a source read in part may never
    // come near it); by default the cap shrinks to fit.
    let mut warnings = Vec::new();
    let holds = free_space(&dir).map(|free| free.saturating_add(cache.used()));
    match (opts.cache_size, holds) {
        (Some(asked), Some(holds)) if asked > holds => warnings.push(format!(
            "--cache-size {} is more than the cache directory {} can hold ({} free, {} cached): reads fail with EIO once that disk is full; give a --cache-size below its free space",
            human(asked),
            dir.display(),
            human(holds - cache.used()),
            human(cache.used())
        )),
        (None, Some(holds)) if holds / 10 * 9 < DEFAULT_CACHE_SIZE => {
            cache.set_cap(holds / 10 * 9);
            log::info!(
                "cache: {} holds {} at most (90% of what its disk can hold)",
                dir.display(),
                human(cache.cap())
            );
        }
        _ => {}
    }
    let rt = object::runtime();
    let timeout = opts.limits.stall;
    let (listed, single) = match &location {
        Location::S3 { bucket, key } => rt.block_on(list_s3(url, bucket, key, opts))?,
        Location::Http { url: u } => (vec![http_file(u, opts)?], true),
        Location::Hub {
            repo,
            revision,
            path,
        } => {
            let all = rt.block_on(list_hub(url, repo, revision, &dir, timeout))?;
            within(all, path)
        }
    };
    if listed.is_empty() {
        return fail(url, "no files there");
    }
    let total = listed.iter().fold(0u64, |a, l| a.saturating_add(l.size));
    if total > MAX_SOURCE {
        return fail(
            url,
            format!("{total} bytes in all: larger than gyrofs serves ({MAX_SOURCE})"),
        );
    }
    let tree = dir.join("trees").join(names::hashed(url, &[url]));
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree).or_else(|e| fail(url, format!("{}: {e}", tree.display())))?;
    let mut objects = Vec::new();
    let mut backed: HashMap<PathBuf, Arc<dyn Fetcher>> = HashMap::new();
    for l in listed {
        if l.name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            log::warn!(
                "{url}: skipping remote file with unusable name '{}'",
                l.name
            );
            continue;
        }
        let entry = Entry::open(&cache, &l.identity, &l.version, l.size)
            .or_else(|e| fail(url, e.to_string()))?;
        if let Some(first) = &l.first {
            // The blocks the listing's GET brought (whole ones only).
            for (b, bytes) in first.chunks(BLOCK as usize).enumerate() {
                if bytes.len() as u64 == entry.span(b, b + 1).1
                    && entry.claim(b, b + 1, false).fetch == [(b, b + 1)]
                {
                    entry.land(b, bytes).or_else(|e| fail(url, e.to_string()))?;
                }
            }
        }
        let link = tree.join(&l.name);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).or_else(|e| fail(url, e.to_string()))?;
        }
        std::os::unix::fs::symlink(&entry.data_path, &link)
            .or_else(|e| fail(url, format!("{}: {e}", link.display())))?;
        let real = std::fs::canonicalize(&entry.data_path).or_else(|e| fail(url, e.to_string()))?;
        let object_url = match single {
            true => url.to_string(),
            false => format!("{}/{}", url.trim_end_matches('/'), l.name),
        };
        let obj = RemoteObject::new(
            names::redact(&object_url),
            l.target,
            l.etag,
            entry,
            opts.limits,
        );
        backed.insert(real, Arc::clone(&obj) as Arc<dyn Fetcher>);
        objects.push((link, obj));
    }
    // Every file's first block, all at once: enough to tell formats apart,
    // and most headers and side files whole.
    let first = |link: &Path| first_fetch(&link.to_string_lossy());
    let since: Vec<u64> = objects.iter().map(|(_, o)| o.entry.failures()).collect();
    for (link, o) in &objects {
        o.start(0, first(link));
    }
    for ((link, o), since) in objects.iter().zip(since) {
        o.ensure_since(0, first(link), Some(since))
            .or_else(|e| fail(url, e.to_string()))?;
    }
    let path = if single { objects[0].0.clone() } else { tree };
    let opener = Opener::remote(backed, Arc::clone(cache.epochs()));
    Ok(Located {
        path,
        opener,
        warnings,
    })
}

/// Bytes free for an unprivileged user on the filesystem of `dir`.
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs reads the NUL-terminated path and writes only the
    // struct we pass, which is fully initialized (zeroed) beforehand.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `c` outlives the call.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| (st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// `n` bytes as `12.3G`, `512M`, `64K`.
fn human(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (u, size) in UNITS {
        if n >= size {
            return format!("{:.1}{u}", n as f64 / size as f64);
        }
    }
    format!("{n}")
}

/// The version of an object that states none (no ETag): unique to this
/// process, so no later mount trusts its cached blocks.
fn unversioned() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("unversioned-{}-{nanos}", std::process::id())
}

/// What is fetched of a file at open: one block, or for a GGUF, whose
/// header holds the tokenizer (often MiBs), its first MiB.
fn first_fetch(name: &str) -> u64 {
    match name.ends_with(".gguf") {
        true => FIRST_GGUF,
        false => BLOCK,
    }
}

/// The files of a Hub listing that `path` names: one file (then the only
/// one, by its base name), or a folder's files (names relative to it).
fn within(all: Vec<Listed>, path: &str) -> (Vec<Listed>, bool) {
    if path.is_empty() {
        return (all, false);
    }
    if let Some(i) = all.iter().position(|l| l.name == path) {
        let mut one = all.into_iter().nth(i).expect("found");
        one.name = path.rsplit('/').next().unwrap_or(path).to_string();
        return (vec![one], true);
    }
    let prefix = format!("{path}/");
    let inside = all
        .into_iter()
        .filter_map(|mut l| {
            let rel = l.name.strip_prefix(&prefix)?.to_string();
            l.name = rel;
            Some(l)
        })
        .collect();
    (inside, false)
}

fn client_options(opts: &RemoteOptions) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(true)
        .with_connect_timeout(opts.limits.stall)
        .with_timeout_disabled()
}

fn no_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..Default::default()
    }
}

async fn list_s3(
    url: &str,
    bucket: &str,
    key: &str,
    opts: &RemoteOptions,
) -> Result<(Vec<Listed>, bool), RemoteError> {
    let mut b = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_client_options(client_options(opts))
        .with_retry(no_retry())
        .with_skip_signature(opts.no_sign_request);
    let endpoint = opts
        .endpoint_url
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
    if let Some(e) = endpoint {
        b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
    }
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        b = b.with_region("us-east-1");
    }
    let store: Arc<dyn ObjectStore> = Arc::new(b.build().or_else(|e| fail(url, e.to_string()))?);
    let timeout = opts.limits.stall;
    let host = opts
        .endpoint_url
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .unwrap_or_else(|| "aws".into());
    let listed = |path: StorePath, name: String, meta: object_store::ObjectMeta| Listed {
        identity: format!("s3 {host} {bucket}/{path}"),
        version: meta.e_tag.clone().unwrap_or_else(unversioned),
        name,
        size: meta.size,
        etag: meta.e_tag.clone(),
        target: Target::Store {
            store: Arc::clone(&store),
            path,
        },
        first: None,
    };
    let key = key.trim_end_matches('/');
    if !key.is_empty() {
        let path = StorePath::from(key);
        match tokio::time::timeout(timeout, store.head(&path)).await {
            Err(_) => return fail(url, format!("no answer within {timeout:?}")),
            Ok(Ok(meta)) => {
                let (parent, name) = key.rsplit_once('/').unwrap_or(("", key));
                let Some((stem, _, count)) = crate::naming::gguf_split(name) else {
                    return Ok((vec![listed(path, name.to_string(), meta)], true));
                };
                // One part of a GGUF split set names the whole set (as a
                // local part does): list its siblings too.
                let siblings = list_prefix(url, &store, parent, timeout).await?;
                let mut set: Vec<Listed> = siblings
                    .into_iter()
                    .filter(|(n, _)| {
                        crate::naming::gguf_split(n)
                            .is_some_and(|(s, _, c)| s == stem && c == count)
                    })
                    .map(|(n, m)| listed(m.location.clone(), n, m))
                    .collect();
                // The named part first: `prepare` returns its path.
                set.sort_by_key(|l| l.name != name);
                return Ok((set, true));
            }
            Ok(Err(object_store::Error::NotFound { .. })) => {}
            Ok(Err(e)) => return fail(url, s3_error(e)),
        }
    }
    let found = list_prefix(url, &store, key, timeout).await?;
    let out = found
        .into_iter()
        .map(|(name, meta)| listed(meta.location.clone(), name, meta))
        .collect();
    Ok((out, false))
}

/// An S3 error at mount, on one line; a refusal of the credentials says
/// where they come from.
fn s3_error(e: object_store::Error) -> String {
    use object_store::Error as E;
    match e {
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => store::store_error(e).to_string(),
        e => store::one_line(&e.to_string()),
    }
}

/// Every object under `key/` (all of the bucket for ""), with its name
/// relative to it.
async fn list_prefix(
    url: &str,
    store: &Arc<dyn ObjectStore>,
    key: &str,
    timeout: Duration,
) -> Result<Vec<(String, object_store::ObjectMeta)>, RemoteError> {
    let prefix = (!key.is_empty()).then(|| StorePath::from(key));
    let mut stream = store.list(prefix.as_ref());
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(timeout, stream.next()).await {
            Err(_) => return fail(url, format!("listing: no answer within {timeout:?}")),
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => {
                return fail(url, format!("listing: {}", s3_error(e)));
            }
            Ok(Some(Ok(meta))) => {
                let full = meta.location.to_string();
                let name = match key {
                    "" => full.clone(),
                    k => match full.strip_prefix(k).and_then(|r| r.strip_prefix('/')) {
                        Some(r) => r.to_string(),
                        None => continue,
                    },
                };
                out.push((name, meta));
            }
        }
    }
}

/// An http(s) file: its size, ETag and Last-Modified come from a ranged
/// GET of its first bytes, which also proves that the server takes range
/// requests.
fn http_file(url: &str, opts: &RemoteOptions) -> Result<Listed, RemoteError> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or("");
    if name.is_empty() || path.matches('/').count() < 3 {
        return fail(url, "names no file (https://HOST/PATH/FILE)");
    }
    let client = store::client(opts.limits.stall).or_else(|e| fail(url, e))?;
    let mut first = Vec::new();
    let mut attempt = 0;
    let meta = loop {
        first.clear();
        let mut probe = |b: &[u8]| {
            first.extend_from_slice(b);
            Ok(())
        };
        let got = object::runtime().block_on(http::ranged_get(
            client.get(url),
            url,
            0..first_fetch(name),
            http::Expect::default(),
            opts.limits.stall,
            &mut probe,
        ));
        attempt += 1;
        match got {
            Ok((m, _)) => break m,
            Err(store::FetchError::NoRange) => {
                return fail(
                    url,
                    "the server does not support range requests (it answered a ranged GET with the whole file); gyrofs needs them to fetch only what is read",
                );
            }
            Err(store::FetchError::Changed(_)) => {
                return fail(url, "not found (or not readable) on the server");
            }
            Err(e) => match opts.limits.next_wait(&e, attempt) {
                Some(wait) => {
                    log::warn!(
                        "{}: attempt {attempt} failed ({e}); retrying in {wait:.1?}",
                        names::redact(url)
                    );
                    std::thread::sleep(wait);
                }
                None => return fail(url, opts.limits.why_not_retried(&e)),
            },
        }
    };
    if meta.etag.is_none() {
        log::warn!(
            "{}: the server sends no ETag: a change of the file cannot be detected, and its cache is not reused by a later mount",
            names::redact(url)
        );
    }
    Ok(Listed {
        name: name.to_string(),
        identity: url.to_string(),
        size: meta.size,
        version: meta.etag.clone().unwrap_or_else(unversioned),
        etag: meta.etag,
        target: Target::Http {
            client,
            url: url.to_string(),
            last_modified: meta.last_modified,
        },
        first: Some(first),
    })
}

/// The token for the Hub: `HF_TOKEN`, else the file `huggingface-cli
/// login` writes (`$HF_TOKEN_PATH`, `$HF_HOME/token`,
/// `~/.cache/huggingface/token`).
fn hub_token() -> Option<String> {
    if let Ok(t) = std::env::var("HF_TOKEN")
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_string());
    }
    let path = std::env::var_os("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("token")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/token"))
        })?;
    let t = std::fs::read_to_string(path).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

async fn list_hub(
    url: &str,
    repo: &str,
    revision: &str,
    cache_dir: &Path,
    timeout: Duration,
) -> Result<Vec<Listed>, RemoteError> {
    let endpoint = std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".to_string());
    let hub = Arc::new(Hub::new(&endpoint, hub_token(), timeout).or_else(|e| fail(url, e))?);
    let commit = if store::is_commit(revision) {
        revision.to_ascii_lowercase()
    } else {
        hub.commit(repo, revision, timeout)
            .await
            .or_else(|e| fail(url, e))?
    };
    // A commit's file list never changes: kept with the cache.
    let saved = cache_dir
        .join("hub")
        .join(names::hashed(repo, &[&endpoint, repo]))
        .join(format!("{commit}.json"));
    let files = match std::fs::read(&saved)
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<(String, u64, String)>>(&b).ok())
    {
        Some(files) => files,
        None => {
            let files: Vec<(String, u64, String)> = hub
                .files(repo, &commit, timeout)
                .await
                .or_else(|e| fail(url, e))?
                .into_iter()
                .map(|f| (f.path, f.size, f.oid))
                .collect();
            if let Some(parent) = saved.parent() {
                let _ = std::fs::create_dir_all(parent);
                let tmp = saved.with_extension("tmp");
                if std::fs::write(&tmp, serde_json::to_vec(&files).unwrap_or_default()).is_ok() {
                    let _ = std::fs::rename(&tmp, &saved);
                }
            }
            files
        }
    };
    log::info!("{url}: commit {commit}, {} files", files.len());
    Ok(files
        .into_iter()
        .map(|(path, size, oid)| Listed {
            identity: format!("hub {endpoint} {repo}@{commit}/{path}"),
            target: Target::Hub {
                hub: Arc::clone(&hub),
                resolve: hub.resolve_url(repo, &commit, &path),
                cdn: Mutex::new(None),
            },
            name: path,
            size,
            // The commit pins the bytes: no If-Match (the CDN's ETag need
            // not be the hash the API states).
            etag: None,
            version: oid,
            first: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {

    /// The no-HOME fallback in /tmp is used only when private: made 0700
    /// when missing; refused when group/other-writable, someone else's,
    /// or a symlink.
    #[test]
    fn the_tmp_fallback_cache_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("gyrofs-cache");
        private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        private_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = private_dir(&dir).unwrap_err();
        assert!(e.contains("not a private folder"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Someone else's (only root can give it away).
            std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
            assert!(private_dir(&dir).is_err());
        }
        let link = tmp.path().join("link");
        let target = tmp.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(private_dir(&link).is_err());
    }

    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("s3://b/models/x").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                key: "models/x".into()
            }
        );
        assert_eq!(
            parse_url("hf://org/m@v1.0").unwrap(),
            Location::Hub {
                repo: "org/m".into(),
                revision: "v1.0".into(),
                path: String::new(),
            }
        );
        assert_eq!(
            parse_url("hf://org/m@refs%2Fpr%2F1/original/").unwrap(),
            Location::Hub {
                repo: "org/m".into(),
                revision: "refs/pr/1".into(),
                path: "original".into(),
            }
        );
        assert_eq!(
            parse_url("hf://org/m").unwrap(),
            Location::Hub {
                repo: "org/m".into(),
                revision: "main".into(),
                path: String::new(),
            }
        );
        assert!(parse_url("hf://org").is_err());
        assert!(parse_url("s3:///x").is_err());
        assert!(parse_url("https://h/dir/").is_err());
        assert!(is_remote(Path::new("https://h/f.gguf")));
        assert!(!is_remote(Path::new("./s3:/x")));
    }
}
