"""The one-line help of the ``ops`` subcommands (``ls``/``stat``/``rm``/``gc``/``top``).

Owned by :mod:`ctshm.ops` (whose parser uses them) and kept outside that package so that
``python -m ctshm`` can list them without importing it (``info`` stays light); the main
parser (:mod:`ctshm.cli`) reads them from here, and nothing here imports either.
"""

from __future__ import annotations

from typing import Final

from ._shm import SHM_DIR

__all__ = ["OPS_HELP"]

#: Subcommand -> one-line help.
OPS_HELP: Final = {
    "ls": f"list rings, segments and orphan semaphores in {SHM_DIR}",
    "stat": "full header, live statistics, semaphores and slots of one object",
    "rm": "remove a ring (with its semaphores), a segment or orphan semaphores",
    "gc": "remove objects whose owners are dead",
    "top": f"live view of every ring in {SHM_DIR}: message and byte rates, fill, peers",
}
