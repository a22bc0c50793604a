#!/usr/bin/env python3
"""An offline fake of three remote storage protocols, for tests and benchmarks.

    python3 scripts/fake_remote.py --root DIR [--hub-root DIR] [--port 0]
        [--port-file FILE] [--rate BYTES_PER_SEC] [--hub-token TOKEN]
        [--tree-page-size N]

Listens on 127.0.0.1:PORT (0 = any free port), HTTP/1.1 with keep-alive.
Once listening it writes "PORT\\n" to --port-file (atomically: tmp + rename)
and prints "listening on http://127.0.0.1:PORT" to stdout. SIGTERM/SIGINT
exit cleanly. Standard library only.

Request routing, in order
-------------------------
1. ``/__*``       control API (not counted, never delayed or failed).
2. ``/api/``      Hugging Face Hub API         (only with --hub-root).
3. ``/cdn/``      Hub "CDN" for LFS files      (only with --hub-root).
4. ``/<org>/<name>/resolve/...`` when HUB_ROOT/<org>/<name> is a directory.
5. everything else: files under --root (plain HTTP and S3 path-style).

Plain files and S3 objects (--root)
-----------------------------------
``GET|HEAD /<path>`` serves ROOT/<path> (URL-decoded; ``..`` components,
directories and missing files give 404 with an S3 ``NoSuchKey`` XML body).
The same path space is plain HTTPS ("https://host/dir/file") and S3
path-style object access (``/<bucket>/<key>``).

* Headers: Content-Length, Accept-Ranges: bytes, ETag: "<md5 hex of
  (st_ino, st_size, st_mtime_ns)>", Last-Modified, Content-Type:
  application/octet-stream.
* ``Range: bytes=a-b | a- | -n`` (only the first range of a list is used):
  206 + ``Content-Range: bytes a-b/TOTAL``; unsatisfiable (a >= TOTAL,
  b < a, -0, any range of an empty file) -> 416 with
  ``Content-Range: bytes */TOTAL``; syntactically invalid -> Range ignored.
  ``If-Range`` (etag or date) that does not match -> Range ignored.
* ``If-Match`` (not ``*``) none of whose strong etags equals the current
  (strong) etag -> 412, empty body (strong comparison: a weak etag never
  matches). ``If-Unmodified-Since`` earlier than the file's mtime (whole
  seconds) -> 412. ``If-None-Match`` matching (weak comparison, or ``*``)
  -> 304, empty body (Content-Length: 0).
* ListObjectsV2: ``GET /<bucket>?list-type=2[&prefix=][&delimiter=]
  [&continuation-token=][&max-keys=][&start-after=][&encoding-type=url]``
  for a directory ROOT/<bucket>; keys are all regular files below it,
  sorted, string-prefix filtered, folded into CommonPrefixes by the
  delimiter; max-keys defaults to (and is capped at) 1000; the opaque
  NextContinuationToken is the url-safe base64 of the last key/prefix
  returned. Unknown bucket -> 404 ``NoSuchBucket``.
* AWS SigV4 ``Authorization`` and ``x-amz-*`` headers are ignored.

Hugging Face Hub subset (--hub-root)
------------------------------------
Layout: HUB_ROOT/<org>/<name>/commits/<40-hex sha>/<files...> and
HUB_ROOT/<org>/<name>/refs/<revision> (text file holding a sha; a revision
with slashes such as ``refs/pr/1`` is the file refs/refs/pr/1). A revision
that is itself a sha present under commits/ resolves to itself.

* ``GET /api/models/<org>/<name>/revision/<rev>`` (rev may be URL-encoded;
  ``/api/models/<org>/<name>`` means rev ``main``) -> ``{"id", "modelId",
  "sha", "private": false, "siblings": [{"rfilename"}...]}``. Unknown repo
  -> 404 ``X-Error-Code: RepositoryNotFound``; unknown revision -> 404
  ``X-Error-Code: RevisionNotFound``.
* ``GET /api/models/<org>/<name>/tree/<rev>[/<path>][?recursive=true]``
  -> JSON list sorted by path of ``{"type": "file", "oid": GITSHA1,
  "size", "path"[, "lfs": {"oid": SHA256, "size", "pointerSize": 134}]}``
  and ``{"type": "directory", "oid": "0"*40, "size": 0, "path"}``; at most
  --tree-page-size entries per page, then ``Link: <absolute next URL with
  cursor=...>; rel="next"``. Missing or non-directory path -> 404
  ``X-Error-Code: EntryNotFound``.
* A file is LFS when its extension is safetensors, gguf, bin, pt, pth,
  ckpt, msgpack, h5 or onnx, or its size is >= 10 MiB.
  GITSHA1 = sha1(b"blob %d\\0" % size + content).
* ``GET|HEAD /<org>/<name>/resolve/<rev>/<path>``: always
  ``X-Repo-Commit: SHA``; LFS -> 302 ``Location:
  http://127.0.0.1:PORT/cdn/<org>/<name>/<SHA>/<path>``, ``X-Linked-Etag``,
  ``X-Linked-Size``, ``ETag: "SHA256"``, Content-Length: 0; other files are
  served directly (ranges and conditionals as above) with ETag "GITSHA1".
  Missing file -> 404 ``X-Error-Code: EntryNotFound``.
* ``GET|HEAD /cdn/<org>/<name>/<SHA>/<path>`` serves commits/<SHA>/<path>
  with ranges and conditionals, ETag "SHA256". Needs no token.
* With --hub-token T, /api/... and .../resolve/... need
  ``Authorization: Bearer T``, else 401 ``{"error": "Invalid credentials"}``.
* Hashes are computed by streaming and cached per
  (path, st_ino, st_size, st_mtime_ns).

Control API (never counted)
---------------------------
* ``GET /__stats`` -> ``{"requests", "data_requests", "bytes", "log":
  [{"method", "path", "range", "status", "bytes", "data", "t"}...]}``
  ("t": seconds since the server started, when the request arrived).
  "requests" counts every other request; "data_requests" the GETs that
  answer a file body (200/206 of plain/S3 files, direct hub resolves, /cdn/);
  "bytes" the body bytes sent by those. Log "path" is the raw request target
  (with query), "bytes" the body bytes sent, "data" whether it is a data
  request. ``GET /__stats?log=0`` omits the log.
* ``POST /__reset`` -> zero the counters and the log; ``{}``.
* ``GET /__control`` -> current settings; ``POST /__control`` with a JSON
  object replaces the given top-level keys (null resets a key) and answers
  the new settings; unknown keys -> 400:
  - ``latency_ms``: sleep this long before answering each counted request.
  - ``stall``: [substr...]: a counted request whose raw target contains one
    of them sends status and headers (true Content-Length) but no body
    (GET), or nothing at all (HEAD, and GETs with an empty body), until the
    setting no longer matches or 600 s passed, then the connection closes.
  - ``fail``: {substr: k}: the next k counted requests whose raw target
    contains substr answer 503 ``{"error":"injected"}``. Instead of k, an
    object ``{"count": k, "status": S, "retry_after": "V"}`` answers
    status S (default 503) with ``Retry-After: V`` when given (404, 410,
    401, 403, 429, ...).
  - ``weak_etag``: true: plain files and S3 objects carry a weak ETag
    (``W/"..."``); ``If-Match`` compares strongly (RFC 9110), so no weak
    ETag ever matches it: 412.
  - ``no_range``: true: Range is ignored on file bodies (200, whole body,
    no Accept-Ranges header).
  - ``rate``: bytes/s (0/null = uncapped): one token bucket shared by all
    connections paces the bodies of data responses (64 KiB chunks).
    --rate sets the initial value.
"""

import argparse
import base64
import email.utils
import hashlib
import http.server
import json
import os
import re
import signal
import socket
import stat
import sys
import threading
import time
import urllib.parse
from xml.sax.saxutils import escape as xml_escape

LFS_EXTENSIONS = {"safetensors", "gguf", "bin", "pt", "pth", "ckpt", "msgpack", "h5", "onnx"}
LFS_MIN_SIZE = 10 * 1024 * 1024
SHA_RE = re.compile(r"[0-9a-f]{40}")
DIGITS_RE = re.compile(r"[0-9]+")
UNCAPPED_CHUNK = 8 << 20
CAPPED_CHUNK = 64 << 10
HASH_CHUNK = 8 << 20
STALL_MAX_S = 600.0
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


class Config:
    root = "."
    hub_root = None
    hub_token = None
    tree_page_size = 1000
    port = 0


# --------------------------------------------------------------------------
# Shared state: counters, log, fault settings, bandwidth pacing
# --------------------------------------------------------------------------


class State:
    def __init__(self, rate):
        self.lock = threading.Lock()
        self.requests = 0
        self.data_requests = 0
        self.bytes = 0
        self.log = []
        self.latency_ms = 0
        self.stall = []
        self.fail = {}
        self.no_range = False
        self.weak_etag = False
        self.rate = rate or 0
        self._next_t = 0.0

    # -- accounting --
    def new_request(self, method, path, rng):
        entry = {"method": method, "path": path, "range": rng, "status": None, "bytes": 0, "data": False,
                 "t": round(time.monotonic() - STARTED, 3)}
        with self.lock:
            self.requests += 1
            self.log.append(entry)
        return entry

    def mark_data(self, entry):
        with self.lock:
            self.data_requests += 1
            entry["data"] = True

    def add_bytes(self, entry, n):
        with self.lock:
            entry["bytes"] += n
            if entry["data"]:
                self.bytes += n

    def stats(self, with_log):
        with self.lock:
            out = {"requests": self.requests, "data_requests": self.data_requests, "bytes": self.bytes}
            if with_log:
                out["log"] = [dict(e) for e in self.log]
        return out

    def reset(self):
        with self.lock:
            self.requests = self.data_requests = self.bytes = 0
            self.log = []

    # -- settings --
    def settings(self):
        with self.lock:
            return {"latency_ms": self.latency_ms, "stall": list(self.stall), "fail": dict(self.fail),
                    "no_range": self.no_range, "weak_etag": self.weak_etag, "rate": self.rate}

    def update(self, obj):
        """Validate everything first, then apply; raises ValueError."""
        if not isinstance(obj, dict):
            raise ValueError("body must be a JSON object")
        new = {}
        for key, val in obj.items():
            if key == "latency_ms":
                if val is None:
                    val = 0
                if isinstance(val, bool) or not isinstance(val, (int, float)) or val < 0:
                    raise ValueError("latency_ms must be a number >= 0")
            elif key == "stall":
                if val is None:
                    val = []
                if isinstance(val, str):
                    val = [val]
                if not isinstance(val, list) or not all(isinstance(s, str) and s for s in val):
                    raise ValueError("stall must be a list of non-empty strings")
            elif key == "fail":
                if val is None:
                    val = {}
                if not isinstance(val, dict):
                    raise ValueError("fail must be an object")
                norm = {}
                for k, v in val.items():
                    if isinstance(v, int) and not isinstance(v, bool):
                        v = {"count": v}
                    if not (isinstance(k, str) and k and isinstance(v, dict)
                            and isinstance(v.get("count"), int)
                            and isinstance(v.get("status", 503), int)
                            and isinstance(v.get("retry_after", ""), str)):
                        raise ValueError("fail must map non-empty strings to counts or "
                                         "{count, status, retry_after}")
                    if v["count"] > 0:
                        norm[k] = {"count": v["count"], "status": v.get("status", 503),
                                   "retry_after": v.get("retry_after")}
                val = norm
            elif key in ("no_range", "weak_etag"):
                if val is None:
                    val = False
                if not isinstance(val, bool):
                    raise ValueError("%s must be a boolean" % key)
            elif key == "rate":
                if val is None:
                    val = 0
                if isinstance(val, bool) or not isinstance(val, (int, float)) or val < 0:
                    raise ValueError("rate must be a number >= 0 or null")
            else:
                raise ValueError("unknown key %r" % key)
            new[key] = val
        with self.lock:
            for key, val in new.items():
                setattr(self, key, val)

    def take_fail(self, path):
        """The failure to answer with (a dict: status, retry_after), or None."""
        with self.lock:
            for sub, f in self.fail.items():
                if sub in path and f["count"] > 0:
                    if f["count"] == 1:
                        del self.fail[sub]
                    else:
                        self.fail[sub] = dict(f, count=f["count"] - 1)
                    return f
        return None

    def stalled(self, path):
        subs = self.stall  # list replaced atomically, never mutated
        return any(s in path for s in subs)

    # -- bandwidth --
    def pace(self, n):
        """Block until n more body bytes may be sent under the global cap."""
        with self.lock:
            rate = self.rate
            if not rate:
                return
            now = time.monotonic()
            # Tolerate a little lateness (send overhead) without allowing a burst.
            start = self._next_t if self._next_t > now - 0.02 else now
            end = start + n / rate
            self._next_t = end
        delay = end - time.monotonic()
        if delay > 0:
            time.sleep(delay)


STATE = State(0)
STARTED = time.monotonic()


# --------------------------------------------------------------------------
# Hashing (streamed, cached)
# --------------------------------------------------------------------------

_hash_lock = threading.Lock()
_hash_cache = {}  # key -> {"sha1": hex, "sha256": hex}
_hash_key_locks = {}


def file_hashes(path, st, want):
    """Return {algo: hex} for algo in want ("sha1" = git blob sha1, "sha256")."""
    key = (path, st.st_ino, st.st_size, st.st_mtime_ns)
    with _hash_lock:
        entry = _hash_cache.setdefault(key, {})
        klock = _hash_key_locks.setdefault(key, threading.Lock())
    with klock:
        missing = [a for a in want if a not in entry]
        if missing:
            hashers = {}
            if "sha1" in missing:
                hashers["sha1"] = hashlib.sha1(b"blob %d\0" % st.st_size)
            if "sha256" in missing:
                hashers["sha256"] = hashlib.sha256()
            buf = bytearray(HASH_CHUNK)
            view = memoryview(buf)
            with open(path, "rb", buffering=0) as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    for h in hashers.values():
                        h.update(view[:n])
            for a, h in hashers.items():
                entry[a] = h.hexdigest()
        return {a: entry[a] for a in want}


def is_lfs(relpath, size):
    ext = relpath.rsplit(".", 1)[-1].lower() if "." in relpath.rsplit("/", 1)[-1] else ""
    return ext in LFS_EXTENSIONS or size >= LFS_MIN_SIZE


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def safe_parts(parts):
    """Drop empty components; None if any component is '.' or '..' or has NUL."""
    out = []
    for p in parts:
        if p == "":
            continue
        if p in (".", "..") or "\0" in p or "/" in p or "\\" in p:
            return None
        out.append(p)
    return out


def etag_matches_strong(header, etag, weak):
    """If-Match: strong comparison; a weak etag (ours or theirs) never matches."""
    if weak:
        return False
    for part in header.split(","):
        p = part.strip()
        if len(p) >= 2 and p[0] == '"' and p[-1] == '"' and p[1:-1] == etag:
            return True
    return False


def etag_matches(header, etag):
    for part in header.split(","):
        p = part.strip()
        if p == "*":
            return True
        if p.startswith("W/"):
            p = p[2:]
        if len(p) >= 2 and p[0] == '"' and p[-1] == '"':
            p = p[1:-1]
        if p == etag:
            return True
    return False


UNSAT = "unsatisfiable"


def parse_range(value, total):
    """(a, b) inclusive, UNSAT, or None (invalid syntax: ignore the header)."""
    v = value.strip()
    if v[:6].lower() != "bytes=":
        return None
    first = v[6:].split(",")[0].strip()
    if "-" not in first:
        return None
    s, _, e = first.partition("-")
    s, e = s.strip(), e.strip()
    if s == "":
        if not DIGITS_RE.fullmatch(e):
            return None
        n = int(e)
        if n == 0 or total == 0:
            return UNSAT
        return (max(0, total - n), total - 1)
    if not DIGITS_RE.fullmatch(s):
        return None
    a = int(s)
    if e == "":
        b = total - 1
    else:
        if not DIGITS_RE.fullmatch(e):
            return None
        b = int(e)
        if b < a:
            return UNSAT
    if a >= total:
        return UNSAT
    return (a, min(b, total - 1))


def http_date(ts):
    return email.utils.formatdate(ts, usegmt=True)


def iso_date(st):
    ms = (st.st_mtime_ns // 1_000_000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(st.st_mtime)) + ".%03dZ" % ms


def plain_etag(st):
    return hashlib.md5(b"%d-%d-%d" % (st.st_ino, st.st_size, st.st_mtime_ns)).hexdigest()


def b64_token(s):
    return base64.urlsafe_b64encode(s.encode("utf-8")).decode("ascii").rstrip("=")


def b64_untoken(t):
    t = t.strip()
    return base64.urlsafe_b64decode((t + "=" * (-len(t) % 4)).encode("ascii")).decode("utf-8")


def s3_error(code, message, **extra):
    body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>' % (
        code, xml_escape(message))
    for k, v in extra.items():
        body += "<%s>%s</%s>" % (k, xml_escape(v), k)
    body += "<RequestId>fake</RequestId></Error>"
    return body.encode("utf-8")


def walk_files(base):
    """Sorted relative ('/'-joined) paths of regular files below base, and of dirs."""
    files, dirs = [], []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        rel = os.path.relpath(dirpath, base)
        rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for d in dirnames:
            dirs.append(rel + d)
        for fn in filenames:
            if os.path.isfile(os.path.join(dirpath, fn)):
                files.append(rel + fn)
    files.sort()
    dirs.sort()
    return files, dirs


# --------------------------------------------------------------------------
# Hub repository helpers
# --------------------------------------------------------------------------


def hub_repo_dir(org, name):
    if Config.hub_root is None:
        return None
    parts = safe_parts([org, name])
    if parts is None or len(parts) != 2:
        return None
    d = os.path.join(Config.hub_root, org, name)
    return d if os.path.isdir(d) else None


def hub_resolve_rev(repo_dir, rev):
    """Commit sha for rev, or None."""
    commits = os.path.join(repo_dir, "commits")
    if SHA_RE.fullmatch(rev) and os.path.isdir(os.path.join(commits, rev)):
        return rev
    parts = safe_parts(rev.split("/"))
    if not parts:
        return None
    try:
        with open(os.path.join(repo_dir, "refs", *parts), "r") as f:
            sha = f.read().strip()
    except OSError:
        return None
    if SHA_RE.fullmatch(sha) and os.path.isdir(os.path.join(commits, sha)):
        return sha
    return None


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

QUIET_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class StallClose(Exception):
    """The request stalled; close the connection without further output."""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self):
        return "fake_remote/1.0"

    def log_message(self, format, *args):  # noqa: A002 - silence access log
        pass

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    # -- entry points --
    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_OPTIONS(self):
        self._handle("OPTIONS")

    def _handle(self, method):
        self._method = method
        self._entry = None
        self._stall = False
        self._started = False
        try:
            self._read_body()
            self._dispatch(method)
        except StallClose:
            self.close_connection = True
        except QUIET_ERRORS:
            self.close_connection = True
        except Exception:
            self.close_connection = True
            import traceback
            traceback.print_exc(file=sys.stderr)
            if not self._started:
                try:
                    self._send(500, [("Content-Type", "application/json")], b'{"error":"internal"}')
                except Exception:
                    pass

    def _read_body(self):
        self._body = b""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # chunked request bodies are not supported
            return
        n = self.headers.get("Content-Length")
        if n:
            try:
                n = int(n)
            except ValueError:
                self.close_connection = True
                return
            self._body = self.rfile.read(n) if n > 0 else b""

    # -- output --
    def _send(self, status, headers, body=b"", file=None):
        """Send a response. file = (fileobj, offset, length) instead of body."""
        length = file[2] if file is not None else len(body)
        entry = self._entry
        try:
            if entry is not None:
                entry["status"] = status
                if file is not None and self._method == "GET":
                    STATE.mark_data(entry)
            if self._stall and (self._method == "HEAD" or length == 0):
                self._do_stall()
            self._started = True
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if self._method == "HEAD" or length == 0:
                return
            if self._stall:
                self.wfile.flush()
                self._do_stall()
            if file is not None:
                self._send_file(*file)
            else:
                self.wfile.write(body)
                if entry is not None:
                    STATE.add_bytes(entry, len(body))
        finally:
            if file is not None:
                file[0].close()

    def _send_file(self, f, offset, length):
        sent = 0
        sock = self.connection
        entry = self._entry
        while sent < length:
            if STATE.rate:
                n = min(CAPPED_CHUNK, length - sent)
                STATE.pace(n)
            else:
                n = min(UNCAPPED_CHUNK, length - sent)
            k = sock.sendfile(f, offset + sent, n)
            if k <= 0:
                break  # file shrank under us
            sent += k
            if entry is not None:
                STATE.add_bytes(entry, k)
        if sent < length:
            self.close_connection = True
            raise StallClose()

    def _do_stall(self):
        deadline = time.monotonic() + STALL_MAX_S
        while STATE.stalled(self.path) and time.monotonic() < deadline:
            time.sleep(0.1)
        raise StallClose()

    def _json(self, status, obj, headers=()):
        body = json.dumps(obj).encode("utf-8")
        self._send(status, [("Content-Type", "application/json")] + list(headers), body)

    def _xml(self, status, body):
        self._send(status, [("Content-Type", "application/xml")], body)

    # -- routing --
    def _dispatch(self, method):
        target = self.path
        if target.startswith(("http://", "https://")):
            sp = urllib.parse.urlsplit(target)
            target = (sp.path or "/") + ("?" + sp.query if sp.query else "")
        raw_path, _, query = target.partition("?")
        self._query = urllib.parse.parse_qs(query, keep_blank_values=True)

        if raw_path.startswith("/__"):
            return self._control(method, raw_path)

        self._entry = STATE.new_request(method, self.path, self.headers.get("Range"))
        if STATE.latency_ms:
            time.sleep(STATE.latency_ms / 1000.0)
        failure = STATE.take_fail(self.path)
        if failure is not None:
            extra = [("Retry-After", failure["retry_after"])] if failure["retry_after"] else []
            return self._json(failure["status"], {"error": "injected"}, extra)
        self._stall = STATE.stalled(self.path)
        if self._stall and method == "HEAD":
            self._do_stall()
        if method not in ("GET", "HEAD"):
            self.close_connection = True
            return self._send(405, [("Allow", "GET, HEAD"), ("Connection", "close")])

        raw_parts = raw_path.split("/")[1:]
        if Config.hub_root is not None:
            if raw_path.startswith("/api/"):
                return self._hub_api(raw_parts[1:])
            if raw_path.startswith("/cdn/"):
                return self._hub_cdn(raw_parts[1:])
            if len(raw_parts) >= 3 and raw_parts[2] == "resolve":
                org, name = urllib.parse.unquote(raw_parts[0]), urllib.parse.unquote(raw_parts[1])
                repo_dir = hub_repo_dir(org, name)
                if repo_dir is not None:
                    return self._hub_resolve(org, name, repo_dir, raw_parts[3:])
        return self._plain(raw_path)

    # -- control API --
    def _control(self, method, path):
        if path == "/__stats" and method in ("GET", "HEAD"):
            with_log = self._query.get("log", ["1"])[0] not in ("0", "false", "False")
            return self._json(200, STATE.stats(with_log))
        if path == "/__reset" and method == "POST":
            STATE.reset()
            return self._json(200, {})
        if path == "/__control":
            if method in ("GET", "HEAD"):
                return self._json(200, STATE.settings())
            if method == "POST":
                try:
                    obj = json.loads(self._body.decode("utf-8") or "{}")
                    STATE.update(obj)
                except (ValueError, UnicodeDecodeError) as e:
                    return self._json(400, {"error": str(e)})
                return self._json(200, STATE.settings())
        return self._json(404, {"error": "unknown control endpoint"})

    # -- section 1: plain files / S3 --
    def _plain(self, raw_path):
        decoded = urllib.parse.unquote(raw_path)
        parts = safe_parts(decoded.split("/"))
        s3_missing = lambda: self._xml(404, s3_error(  # noqa: E731
            "NoSuchKey", "The specified key does not exist.", Key="/".join((parts or [])[1:])))
        if parts is None or not parts:
            return s3_missing()
        if len(parts) == 1 and "list-type" in self._query:
            return self._s3_list(parts[0])
        return self._serve_file(os.path.join(Config.root, *parts), plain_etag, [], s3_missing)

    def _s3_list(self, bucket):
        bdir = os.path.join(Config.root, bucket)
        if not os.path.isdir(bdir):
            return self._xml(404, s3_error("NoSuchBucket", "The specified bucket does not exist.",
                                           BucketName=bucket))
        q = lambda k: self._query.get(k, [None])[0]  # noqa: E731
        prefix = q("prefix") or ""
        delimiter = q("delimiter") or ""
        start_after = q("start-after") or ""
        token = q("continuation-token")
        url_enc = (q("encoding-type") or "").lower() == "url"
        try:
            max_keys = int(q("max-keys")) if q("max-keys") not in (None, "") else 1000
            if max_keys < 0:
                raise ValueError
        except ValueError:
            return self._xml(400, s3_error("InvalidArgument", "max-keys must be a non-negative integer"))
        max_keys = min(max_keys, 1000)
        after = start_after
        if token is not None:
            try:
                after = max(after, b64_untoken(token))
            except (ValueError, UnicodeDecodeError):
                return self._xml(400, s3_error("InvalidArgument", "The continuation token provided is incorrect"))

        # Walk only the directory implied by the prefix.
        base_rel = prefix[: prefix.rfind("/") + 1]
        base_parts = safe_parts(base_rel.split("/"))
        keys = []
        if base_parts is not None:
            base_dir = os.path.join(bdir, *base_parts)
            if os.path.isdir(base_dir):
                files, _ = walk_files(base_dir)
                pre = "/".join(base_parts) + "/" if base_parts else ""
                keys = [pre + f for f in files if (pre + f).startswith(prefix)]
                keys.sort()

        items = []  # (kind, value) in key order, common prefixes deduplicated
        for key in keys:
            rest = key[len(prefix):]
            if delimiter and delimiter in rest:
                cp = prefix + rest[: rest.index(delimiter) + len(delimiter)]
                if items and items[-1] == ("P", cp):
                    continue
                items.append(("P", cp))
            else:
                items.append(("K", key))
        items = [it for it in items if it[1] > after] if after else items
        page = items[:max_keys]
        truncated = len(items) > len(page) and max_keys > 0

        enc = (lambda s: urllib.parse.quote(s, safe="/")) if url_enc else (lambda s: s)
        out = ['<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="%s">' % S3_NS,
               "<Name>%s</Name>" % xml_escape(bucket),
               "<Prefix>%s</Prefix>" % xml_escape(enc(prefix))]
        if delimiter:
            out.append("<Delimiter>%s</Delimiter>" % xml_escape(enc(delimiter)))
        if start_after:
            out.append("<StartAfter>%s</StartAfter>" % xml_escape(enc(start_after)))
        if token is not None:
            out.append("<ContinuationToken>%s</ContinuationToken>" % xml_escape(token))
        if url_enc:
            out.append("<EncodingType>url</EncodingType>")
        out.append("<KeyCount>%d</KeyCount><MaxKeys>%d</MaxKeys><IsTruncated>%s</IsTruncated>"
                   % (len(page), max_keys, "true" if truncated else "false"))
        if truncated:
            out.append("<NextContinuationToken>%s</NextContinuationToken>" % b64_token(page[-1][1]))
        for kind, value in page:
            if kind != "K":
                continue
            try:
                st = os.stat(os.path.join(bdir, *value.split("/")))
            except OSError:
                continue
            out.append("<Contents><Key>%s</Key><LastModified>%s</LastModified>"
                       "<ETag>&quot;%s&quot;</ETag><Size>%d</Size><StorageClass>STANDARD</StorageClass>"
                       "</Contents>" % (xml_escape(enc(value)), iso_date(st), plain_etag(st), st.st_size))
        for kind, value in page:
            if kind == "P":
                out.append("<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>" % xml_escape(enc(value)))
        out.append("</ListBucketResult>")
        return self._xml(200, "".join(out).encode("utf-8"))

    # -- file bodies with ranges and conditionals (all sections) --
    def _serve_file(self, fs_path, etag_fn, extra_headers, not_found):
        """etag_fn(st) -> etag (without quotes); extra_headers: list of pairs."""
        try:
            f = open(fs_path, "rb", buffering=0)
        except OSError:
            return not_found()
        try:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                f.close()
                return not_found()
            etag = etag_fn(st)
        except BaseException:
            f.close()
            raise
        total = st.st_size
        no_range = STATE.no_range
        weak = STATE.weak_etag and etag_fn is plain_etag
        headers = list(extra_headers) + [
            ("ETag", ('W/"%s"' if weak else '"%s"') % etag),
            ("Last-Modified", http_date(st.st_mtime)),
            ("Content-Type", "application/octet-stream"),
        ]
        if not no_range:
            headers.append(("Accept-Ranges", "bytes"))

        if_match = self.headers.get("If-Match")
        if if_match is not None and if_match.strip() != "*" and not etag_matches_strong(if_match, etag, weak):
            f.close()
            return self._send(412, headers)
        if_unmodified = self.headers.get("If-Unmodified-Since")
        if if_unmodified is not None:
            try:
                since = email.utils.parsedate_to_datetime(if_unmodified).timestamp()
            except (TypeError, ValueError):
                since = None
            if since is not None and int(st.st_mtime) > since:
                f.close()
                return self._send(412, headers)
        if_none = self.headers.get("If-None-Match")
        if if_none is not None and etag_matches(if_none, etag):
            f.close()
            return self._send(304, headers)

        rng = None if no_range else self.headers.get("Range")
        if rng is not None:
            if_range = self.headers.get("If-Range")
            if if_range is not None:
                ir = if_range.strip()
                if ir.startswith('"') or ir.startswith("W/"):
                    ok = not ir.startswith("W/") and ir == '"%s"' % etag
                else:
                    ok = ir == http_date(st.st_mtime)
                if not ok:
                    rng = None
        if rng is not None:
            r = parse_range(rng, total)
            if r == UNSAT:
                f.close()
                return self._send(416, headers + [("Content-Range", "bytes */%d" % total)])
            if r is not None:
                a, b = r
                return self._send(206, headers + [("Content-Range", "bytes %d-%d/%d" % (a, b, total))],
                                  file=(f, a, b - a + 1))
        return self._send(200, headers, file=(f, 0, total))

    # -- section 2: hub --
    def _hub_auth_ok(self):
        if not Config.hub_token:
            return True
        return (self.headers.get("Authorization") or "").strip() == "Bearer " + Config.hub_token

    def _hub_error(self, status, code, message, extra=()):
        headers = list(extra)
        if code:
            headers.append(("X-Error-Code", code))
        return self._json(status, {"error": message}, headers)

    def _hub_api(self, parts):
        # parts: raw components after "/api/"
        if not self._hub_auth_ok():
            return self._json(401, {"error": "Invalid credentials"})
        if len(parts) < 3 or parts[0] != "models":
            return self._hub_error(404, None, "Not found")
        org, name = urllib.parse.unquote(parts[1]), urllib.parse.unquote(parts[2])
        repo_dir = hub_repo_dir(org, name)
        if repo_dir is None:
            return self._hub_error(404, "RepositoryNotFound", "Repository not found")
        rest = parts[3:]
        if rest and rest[-1] == "" and len(rest) == 1:
            rest = []
        if not rest:
            return self._hub_revision(org, name, repo_dir, "main")
        if rest[0] == "revision" and len(rest) >= 2:
            rev = urllib.parse.unquote("/".join(rest[1:]).rstrip("/"))
            return self._hub_revision(org, name, repo_dir, rev)
        if rest[0] == "tree" and len(rest) >= 2:
            rev = urllib.parse.unquote(rest[1])
            path_parts = safe_parts([urllib.parse.unquote(p) for p in rest[2:]])
            if path_parts is None:
                return self._hub_error(404, "EntryNotFound", "Entry not found")
            return self._hub_tree(org, name, repo_dir, rev, rest[1], path_parts)
        return self._hub_error(404, None, "Not found")

    def _hub_revision(self, org, name, repo_dir, rev):
        sha = hub_resolve_rev(repo_dir, rev)
        if sha is None:
            return self._hub_error(404, "RevisionNotFound", "Invalid rev id: %s" % rev)
        files, _ = walk_files(os.path.join(repo_dir, "commits", sha))
        rid = "%s/%s" % (org, name)
        return self._json(200, {"id": rid, "modelId": rid, "sha": sha, "private": False,
                                "siblings": [{"rfilename": p} for p in files]},
                          [("X-Repo-Commit", sha)])

    def _hub_tree(self, org, name, repo_dir, rev, raw_rev, path_parts):
        sha = hub_resolve_rev(repo_dir, rev)
        if sha is None:
            return self._hub_error(404, "RevisionNotFound", "Invalid rev id: %s" % rev)
        commit_dir = os.path.join(repo_dir, "commits", sha)
        base = os.path.join(commit_dir, *path_parts)
        if not os.path.isdir(base):
            return self._hub_error(404, "EntryNotFound", "Entry not found", [("X-Repo-Commit", sha)])
        recursive = (self._query.get("recursive", ["false"])[0]).lower() in ("true", "1")
        prefix = "/".join(path_parts) + "/" if path_parts else ""
        if recursive:
            files, dirs = walk_files(base)
        else:
            files, dirs = [], []
            with os.scandir(base) as it:
                for de in it:
                    if de.is_dir():
                        dirs.append(de.name)
                    elif de.is_file():
                        files.append(de.name)
        names = sorted([(prefix + d, "d") for d in dirs] + [(prefix + f, "f") for f in files])
        cursor = self._query.get("cursor", [None])[0]
        if cursor:
            try:
                after = b64_untoken(cursor)
            except (ValueError, UnicodeDecodeError):
                return self._hub_error(400, None, "Invalid cursor")
            names = [n for n in names if n[0] > after]
        page = names[: max(1, Config.tree_page_size)]
        entries = []
        for path, kind in page:
            if kind == "d":
                entries.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": path})
                continue
            fs = os.path.join(commit_dir, *path.split("/"))
            st = os.stat(fs)
            lfs = is_lfs(path, st.st_size)
            h = file_hashes(fs, st, ("sha1", "sha256") if lfs else ("sha1",))
            e = {"type": "file", "oid": h["sha1"], "size": st.st_size, "path": path}
            if lfs:
                e["lfs"] = {"oid": h["sha256"], "size": st.st_size, "pointerSize": 134}
            entries.append(e)
        headers = [("X-Repo-Commit", sha)]
        if len(names) > len(page):
            url = "http://127.0.0.1:%d/api/models/%s/%s/tree/%s%s?%scursor=%s" % (
                Config.port, urllib.parse.quote(org, safe=""), urllib.parse.quote(name, safe=""),
                urllib.parse.quote(rev, safe=""),
                "/" + urllib.parse.quote("/".join(path_parts), safe="/") if path_parts else "",
                "recursive=true&" if recursive else "", b64_token(page[-1][0]))
            headers.append(("Link", '<%s>; rel="next"' % url))
        return self._json(200, entries, headers)

    def _hub_resolve(self, org, name, repo_dir, parts):
        if not self._hub_auth_ok():
            return self._json(401, {"error": "Invalid credentials"})
        if not parts:
            return self._hub_error(404, "RevisionNotFound", "Invalid rev id")
        rev = urllib.parse.unquote(parts[0])
        sha = hub_resolve_rev(repo_dir, rev)
        if sha is None:
            return self._hub_error(404, "RevisionNotFound", "Invalid rev id: %s" % rev)
        common = [("X-Repo-Commit", sha)]
        path_parts = safe_parts([urllib.parse.unquote(p) for p in parts[1:]])
        not_found = lambda: self._hub_error(404, "EntryNotFound", "Entry not found", common)  # noqa: E731
        if not path_parts:
            return not_found()
        relpath = "/".join(path_parts)
        fs = os.path.join(repo_dir, "commits", sha, *path_parts)
        try:
            st = os.stat(fs)
        except OSError:
            return not_found()
        if not stat.S_ISREG(st.st_mode):
            return not_found()
        if is_lfs(relpath, st.st_size):
            sha256 = file_hashes(fs, st, ("sha256",))["sha256"]
            loc = "http://127.0.0.1:%d/cdn/%s/%s/%s/%s" % (
                Config.port, urllib.parse.quote(org, safe=""), urllib.parse.quote(name, safe=""),
                sha, urllib.parse.quote(relpath, safe="/"))
            return self._send(302, common + [
                ("Location", loc),
                ("X-Linked-Etag", '"%s"' % sha256),
                ("X-Linked-Size", str(st.st_size)),
                ("ETag", '"%s"' % sha256),
            ])
        return self._serve_file(fs, lambda s: file_hashes(fs, s, ("sha1",))["sha1"], common, not_found)

    def _hub_cdn(self, parts):
        not_found = lambda: self._hub_error(404, "EntryNotFound", "Entry not found")  # noqa: E731
        parts = safe_parts([urllib.parse.unquote(p) for p in parts])
        if parts is None or len(parts) < 4 or not SHA_RE.fullmatch(parts[2]):
            return not_found()
        org, name, sha = parts[0], parts[1], parts[2]
        repo_dir = hub_repo_dir(org, name)
        if repo_dir is None:
            return not_found()
        fs = os.path.join(repo_dir, "commits", sha, *parts[3:])
        return self._serve_file(fs, lambda s: file_hashes(fs, s, ("sha256",))["sha256"], [], not_found)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never join stalled handler threads on exit
    request_queue_size = 128

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], QUIET_ERRORS):
            return
        super().handle_error(request, client_address)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Offline fake of plain HTTP, S3 and Hugging Face Hub.")
    ap.add_argument("--root", required=True, help="directory served as plain files / S3 buckets")
    ap.add_argument("--hub-root", help="Hub layout root: <org>/<name>/{commits/<sha>/...,refs/<rev>}")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the bound port here (atomically)")
    ap.add_argument("--rate", type=float, default=0, help="initial bandwidth cap in bytes/s (0 = none)")
    ap.add_argument("--hub-token", help="require 'Authorization: Bearer TOKEN' on hub API/resolve")
    ap.add_argument("--tree-page-size", type=int, default=1000)
    args = ap.parse_args(argv)

    Config.root = os.path.abspath(args.root)
    Config.hub_root = os.path.abspath(args.hub_root) if args.hub_root else None
    Config.hub_token = args.hub_token or None
    Config.tree_page_size = max(1, args.tree_page_size)
    STATE.rate = args.rate if args.rate and args.rate > 0 else 0
    if STATE.rate == int(STATE.rate):
        STATE.rate = int(STATE.rate)

    def stop(signum, frame):
        # Ignore repeats while shutting down, then leave serve_forever.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    server = None
    try:
        server = Server(("127.0.0.1", args.port), Handler)
        Config.port = server.server_address[1]
        if args.port_file:
            tmp = "%s.tmp.%d" % (args.port_file, os.getpid())
            with open(tmp, "w") as f:
                f.write("%d\n" % Config.port)
            os.replace(tmp, args.port_file)
        print("listening on http://127.0.0.1:%d" % Config.port, flush=True)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.server_close()
    return 0


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalization: daemon handler threads may still be
    # stalled, sleeping or inside sendfile.
    os._exit(rc)
