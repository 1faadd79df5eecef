"""``python -m fracturescan.train …`` = ``fracturescan train …``; the module torchrun launches:

    torchrun --nproc-per-node 4 -m fracturescan.train --data ~/MURA-v1.1 --out runs/wrist
"""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
