"""A gyrofs mount for the check scripts, unmounted and removed on every path.

    with mounted(gyrofs, source, "--dtype", "bf16,f16") as mnt:
        ...

Mounts `source` on a fresh temporary directory; on exit (normal or not)
detaches it (`umount -l`: torch may still hold maps of its files until they
are collected), waits until it has left the mount table (bounded), removes
the directory, and raises if the mount is still there.
"""

import contextlib
import os
import subprocess
import tempfile
import time
from pathlib import Path


def _is_mounted(path: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split(" ")[1] == path for line in f)


@contextlib.contextmanager
def mounted(gyrofs, source, *args, timeout=10.0):
    mnt = os.path.realpath(tempfile.mkdtemp(prefix="gyrofs-check-"))
    try:
        subprocess.run([str(gyrofs), "mount", str(source), mnt, *map(str, args)], check=True)
        yield Path(mnt)
    finally:
        deadline = time.monotonic() + timeout
        while _is_mounted(mnt):
            subprocess.run(["umount", "-l", mnt], check=False, stderr=subprocess.DEVNULL)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{mnt}: still mounted after {timeout} s")
            time.sleep(0.05)
        os.rmdir(mnt)
