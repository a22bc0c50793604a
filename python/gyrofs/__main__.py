"""``python -m gyrofs ARGS``: the ``gyrofs`` command."""

import os
import sys

from gyrofs import find_gyrofs_bin

if __name__ == "__main__":
    gyrofs = find_gyrofs_bin()
    os.execvp(gyrofs, [gyrofs, *sys.argv[1:]])
