#!/usr/bin/env python3
"""Run the README's Python example against the installed `gyrofs` wheel.

Usage: VENV/bin/python scripts/check_python_package.py SOURCE_FOLDER

Run by scripts/test_python_package.sh with the interpreter of a fresh
virtual environment the wheel was installed into. Checks: `gyrofs.mount`
gives a pathlib.Path whose bf16/ model loads (with the `safetensors` package
when installed, else by parsing each header with json + struct, said on
stdout), unmounts on exit and when the body raises, and leaves nothing
mounted; a failing mount raises GyrofsError with gyrofs's one line;
`gyrofs.ls` is the tensor table as dicts; `gyrofs.convert` writes the same
bytes as the mount; the man page and shell completions are installed.
Prints one line per check; exits non-zero on the first failure.
"""

import json
from math import prod
import os
import pathlib
import struct
import subprocess
import sys
import tempfile

import gyrofs


def mounted(path):
    want = str(path)
    with open("/proc/self/mounts") as f:
        return any(line.split(" ")[1] == want for line in f)


def gyrofs_mounts():
    with open("/proc/self/mounts") as f:
        return [line for line in f if line.split(" ")[2] == "fuse.gyrofs"]


def load(folder):
    """{tensor: (dtype, shape, bytes)} of every .safetensors file in
    `folder`, read through the mount: with the `safetensors` package when
    it is installed (its own parser, no framework needed), else by parsing
    each header with json + struct."""
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        raw = f.read_bytes()
        try:
            import safetensors

            for k, t in safetensors.deserialize(raw):
                out[k] = (t["dtype"], list(t["shape"]), len(t["data"]))
            how = "safetensors " + safetensors.__version__
        except ImportError:
            (n,) = struct.unpack("<Q", raw[:8])
            for k, v in json.loads(raw[8 : 8 + n]).items():
                if k != "__metadata__":
                    out[k] = (v["dtype"], v["shape"], v["data_offsets"][1] - v["data_offsets"][0])
            how = "json+struct (the safetensors package is not installed)"
    return out, how


def check(what, ok):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        sys.exit(1)


def main():
    source = pathlib.Path(sys.argv[1])
    check("gyrofs binary: " + gyrofs.find_gyrofs_bin(), sys.prefix in gyrofs.find_gyrofs_bin())
    before = gyrofs_mounts()

    # The example: mount, load, exit.
    with gyrofs.mount(source) as m:
        check("mount gives a pathlib.Path", isinstance(m, pathlib.Path))
        check("mounted while in the block", mounted(m))
        tensors, how = load(m / "bf16")
        check(f"bf16/ loads: {len(tensors)} tensors, with {how}", len(tensors) > 0)
        check("bf16/ is BF16", all(d == "BF16" for d, _, _ in tensors.values()))
        sizes = all(n == 2 * prod(shape) for _, shape, n in tensors.values())
        check("every tensor has its shape's bytes", sizes)
        mnt = m
    check("unmounted on exit", not mounted(mnt))
    check("its temporary mount point removed", not mnt.exists())

    # Unmounted even when the body raises; the exception goes through.
    d = tempfile.mkdtemp()
    try:
        with gyrofs.mount(source, d, dtype=["bf16", "f16"], threads=2) as m:
            check("keyword options reach the mount (dtype=[bf16, f16])", (m / "f16" / "config.json").is_file())
            raise KeyError("from the body")
    except KeyError as e:
        check("the body's exception comes out", e.args == ("from the body",))
    check("unmounted after the body raised", not mounted(pathlib.Path(d)))
    os.rmdir(d)

    # An unmount error does not replace the body's exception (here the
    # body unmounted itself, so the block's own unmount has nothing to do).
    try:
        with gyrofs.mount(source) as m:
            gyrofs.unmount(m)
            raise KeyError("after unmounting")
    except KeyError as e:
        check("the body's exception comes out past an unmount error", e.args == ("after unmounting",))
    check("its temporary mount point removed after that", not m.exists())

    # A mount point named like a flag (relative, in the current folder).
    os.mkdir("-weird-name-dir")
    with gyrofs.mount(source, "-weird-name-dir") as m:
        check("a mount point starting with '-' mounts", mounted(m.absolute()) and (m / "bf16").is_dir())
    check("and unmounts", not mounted(m.absolute()))
    os.rmdir("-weird-name-dir")

    # Ctrl-C while `gyrofs mount` runs: the daemon (in its own session) may
    # still mount; the mount is detached and the temporary folder removed.
    real_run = gyrofs._run

    def interrupted(args, **kw):
        out = real_run(args, **kw)
        if args[0] == "mount":
            raise KeyboardInterrupt
        return out

    gyrofs._run = interrupted
    made = set(pathlib.Path(tempfile.gettempdir()).glob("gyrofs-*"))
    try:
        with gyrofs.mount(source):
            check("an interrupted mount raises", False)
    except KeyboardInterrupt:
        check("an interrupted mount lets KeyboardInterrupt through", True)
    finally:
        gyrofs._run = real_run
    check("an interrupted mount is detached", gyrofs_mounts() == before)
    check("and its temporary folder removed", set(pathlib.Path(tempfile.gettempdir()).glob("gyrofs-*")) <= made)

    # A failing mount raises with gyrofs's line, and nothing is mounted.
    try:
        with gyrofs.mount(source / "no-such-model") as m:
            check("a failing mount raises", False)
    except gyrofs.GyrofsError as e:
        msg = str(e)
        check(f"a failing mount raises GyrofsError: {msg}", "no-such-model" in msg and "\n" not in msg)
    d = tempfile.mkdtemp()
    try:
        with gyrofs.mount(source, d, bogus_option=1):
            check("an unknown keyword raises", False)
    except gyrofs.GyrofsError as e:
        check(f"an unknown keyword raises GyrofsError: {e}", "bogus-option" in str(e))
    os.rmdir(d)
    check("nothing left mounted", gyrofs_mounts() == before)

    # ls: the tensor table as dicts.
    table = gyrofs.ls(source)
    check(f"ls: {len(table)} tensors as dicts", len(table) > 0 and all(isinstance(t, dict) for t in table))
    check("ls rows have name, dtype, shape, bytes", all({"name", "dtype", "shape", "bytes"} <= t.keys() for t in table))

    # convert: the same bytes as the mount.
    with tempfile.TemporaryDirectory() as out:
        got = gyrofs.convert(source, pathlib.Path(out) / "bf16", view="bf16", files_only=True)
        check("convert returns a Path", isinstance(got, pathlib.Path))
        with gyrofs.mount(source) as m:
            names = sorted(p.name for p in (m / "bf16").iterdir() if p.is_file())
            same = all((m / "bf16" / n).read_bytes() == (got / n).read_bytes() for n in names)
        check(f"convert wrote the mount's bytes ({len(names)} files)", same and sorted(p.name for p in got.iterdir()) == names)
    with tempfile.TemporaryDirectory() as out:
        try:
            gyrofs.convert(source / "missing", out)
            check("a failing convert raises", False)
        except gyrofs.GyrofsError as e:
            check(f"a failing convert raises GyrofsError: {e}", "missing" in str(e))

    # The command, the man page and the completions came with the wheel.
    v = subprocess.run([gyrofs.find_gyrofs_bin(), "--version"], capture_output=True, text=True)
    check("gyrofs --version: " + v.stdout.strip(), v.returncode == 0)
    check("gyrofs.__version__ is the binary's: " + gyrofs.__version__, v.stdout.split() == ["gyrofs", gyrofs.__version__])
    try:
        with gyrofs.mount(source, foreground=True):
            check("foreground=True refused", False)
    except ValueError:
        check("foreground=True refused (it would never return)", True)
    share = pathlib.Path(sys.prefix) / "share"
    for rel in [
        "man/man1/gyrofs.1",
        "man/man1/gyrofs-mount.1",
        "man/man1/gyrofs-convert.1",
        "bash-completion/completions/gyrofs",
        "zsh/site-functions/_gyrofs",
        "fish/vendor_completions.d/gyrofs.fish",
    ]:
        check("installed: share/" + rel, (share / rel).is_file() and (share / rel).stat().st_size > 0)
    check("nothing left mounted", gyrofs_mounts() == before)


if __name__ == "__main__":
    main()
