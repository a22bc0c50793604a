"""gyrofs from Python: mount ML checkpoints as lazy, byte-exact safetensors files.

    import gyrofs
    with gyrofs.mount("hf://openai/gpt-oss-20b") as m:      # or a local path, s3://, https://
        model = AutoModelForCausalLM.from_pretrained(m / "bf16")
    print(gyrofs.ls("model.gguf"))                          # the tensor table, as dicts
    gyrofs.convert("ckpt.pt", "out/", view="bf16")          # same bytes as the CLI

Every call runs the ``gyrofs`` command this package installs (the same
binary as ``cargo install``), so the Python API and the command line cannot
disagree. Keyword arguments are the command's long options with ``_`` for
``-``: ``dtype="bf16,f16"`` (or a list), ``cache_dir=...``,
``cache_size="64G"``, ``allow_other=True``. A failure raises
:class:`GyrofsError` carrying gyrofs's one-line message.
"""

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

__all__ = ["GyrofsError", "mount", "unmount", "ls", "manifest", "convert", "find_gyrofs_bin"]


def __getattr__(name):
    # `gyrofs.__version__`: the installed wheel's version (the crate's).
    if name == "__version__":
        from importlib.metadata import version

        return version("gyrofs")
    raise AttributeError(f"module 'gyrofs' has no attribute {name!r}")


class GyrofsError(Exception):
    """A gyrofs command failed; ``str(e)`` is its one-line message."""

    def __init__(self, message, returncode=None, stderr=""):
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.stderr = stderr


def find_gyrofs_bin():
    """The ``gyrofs`` executable: ``$GYROFS_BIN``, else the one installed
    with this package, else the first on ``PATH``."""
    override = os.environ.get("GYROFS_BIN")
    if override:
        return override
    exe = "gyrofs" + (sysconfig.get_config_var("EXE") or "")
    candidates = [os.path.join(sysconfig.get_path("scripts"), exe)]
    user_scheme = {"posix": "posix_user", "nt": "nt_user"}.get(os.name)
    if user_scheme:
        with contextlib.suppress(KeyError):
            candidates.append(os.path.join(sysconfig.get_path("scripts", user_scheme), exe))
    # The bin folder beside the running interpreter (a venv not activated).
    candidates.append(os.path.join(os.path.dirname(sys.executable), exe))
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    found = shutil.which("gyrofs")
    if found:
        return found
    raise GyrofsError("the gyrofs executable was not found (pip install gyrofs, or set GYROFS_BIN)")


def _flags(options):
    """Keyword arguments as long options: ``cache_dir="/c"`` ->
    ``--cache-dir=/c``, ``allow_other=True`` -> ``--allow-other``; False
    and None leave the option out; a list or tuple is joined with commas."""
    args = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            args.append(flag + "=" + ",".join(str(v) for v in value))
        else:
            args.append(flag + "=" + (os.fspath(value) if isinstance(value, os.PathLike) else str(value)))
    return args


def _message(stderr):
    """gyrofs's one-line error out of a command's stderr."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("gyrofs: ") and not line.startswith("gyrofs: warning:"):
            return line[len("gyrofs: "):]
    for line in lines:  # The command line parser's own errors.
        if line.startswith("error: "):
            return line[len("error: "):]
    return lines[-1] if lines else "gyrofs failed without a message"


def _run(args, capture_stdout=False):
    cmd = [find_gyrofs_bin()] + [os.fspath(a) for a in args]
    done = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in done.stderr.splitlines():
        if line.startswith("gyrofs: warning:"):
            print(line, file=sys.stderr)
    if done.returncode != 0:
        raise GyrofsError(_message(done.stderr), done.returncode, done.stderr)
    return done.stdout


def unmount(mountpoint, lazy=False):
    """Unmount a gyrofs mount (``gyrofs umount``; ``lazy``: detach now,
    finish when the last open file is closed)."""
    _run(["umount"] + (["-l"] if lazy else []) + ["--", mountpoint])


@contextlib.contextmanager
def mount(source, mountpoint=None, **options):
    """Mount ``source`` read-only and give its mount point as a
    :class:`pathlib.Path`; unmount when the block ends, also when it raises.

    ``mountpoint`` defaults to a new temporary folder, removed afterwards.
    ``options`` are ``gyrofs mount``'s long options (``dtype``,
    ``cache_dir``, ``cache_size``, ``cache_converted=True`` (keep converted
    bytes on disk: docs/CACHE.md), ``threads``, ``allow_other``, ``uid``,
    ``log_file``, ...). The mount answers when this returns; a source
    gyrofs cannot read raises :class:`GyrofsError` and nothing is mounted.
    """
    if options.get("foreground"):
        raise ValueError("gyrofs.mount returns once the mount answers; foreground=True would never return")
    made = mountpoint is None
    if made:
        mountpoint = tempfile.mkdtemp(prefix="gyrofs-")
    path = pathlib.Path(mountpoint)
    try:
        # "--": a source or mount point starting with '-' is not a flag.
        _run(["mount"] + _flags(options) + ["--", source, path])
    except GyrofsError:
        # The mount failed: nothing is mounted.
        if made:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    except BaseException:
        # Interrupted (Ctrl-C): the `gyrofs mount` command is killed, but
        # its daemon (in a session of its own) may still mount. Wait a
        # little for it, then detach it.
        deadline = time.monotonic() + _MOUNT_SETTLE_SECS
        while not os.path.ismount(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        _cleanup(path, made)
        raise
    try:
        yield path
    except BaseException:
        # The body raised: clean up without letting an unmount error hide
        # the body's exception.
        _cleanup(path, made)
        raise
    try:
        try:
            unmount(path)
        except GyrofsError:
            # Busy (a loader still holds a file open): detach now; the
            # daemon ends when the last file is closed.
            unmount(path, lazy=True)
    finally:
        if made:
            with contextlib.suppress(OSError):
                path.rmdir()


# How long an interrupted gyrofs.mount waits for the daemon's mount to
# appear before giving up on detaching it.
_MOUNT_SETTLE_SECS = 2.0


def _cleanup(path, made):
    """Detach the mount at ``path`` if there is one and remove ``path`` if
    ``made``; never raises (an error is printed to stderr)."""
    try:
        if os.path.ismount(path):
            unmount(path, lazy=True)
    except Exception as e:  # noqa: BLE001 - the caller's exception goes on
        print(f"gyrofs: warning: could not unmount {path}: {e}", file=sys.stderr)
    if made:
        with contextlib.suppress(OSError):
            path.rmdir()


def manifest(source, **options):
    """The manifest of ``source`` (what ``manifest.json`` of a mount holds:
    every tensor, the files, the config), read without mounting."""
    return json.loads(_run(["ls", "--json"] + _flags(options) + ["--", source], capture_stdout=True))


def ls(source, **options):
    """The tensor table of ``source``: one dict per tensor (name, dtypes,
    shape, bytes, source file and offset), as ``gyrofs ls --json`` lists it."""
    return manifest(source, **options)["tensors"]


def convert(source, outdir, view=None, **options):
    """Write one view of ``source`` (default ``bf16``) to ``outdir`` without
    FUSE, byte-identical to copying it out of a mount (``gyrofs convert``).
    Returns ``outdir`` as a :class:`pathlib.Path`."""
    options.setdefault("quiet", True)
    args = ["convert"] + (["--view=" + view] if view is not None else [])
    _run(args + _flags(options) + ["--", source, outdir])
    return pathlib.Path(outdir)
