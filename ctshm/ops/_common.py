"""What every ``ctshm.ops`` module shares: the error type, object paths and state names."""

from __future__ import annotations

from typing import Any, Final

from .._shm import SHM_DIR

__all__ = ["COMMANDS", "NOT_A_RING", "OPERATIONS", "SHM_DIR", "STATES_FIN", "OpsError",
           "sem_path", "shm_path"]

#: The subcommands ``ctshm.ops`` implements (``python -m ctshm CMD``).
COMMANDS: Final = ("ls", "stat", "rm", "gc", "top")

#: ``finished`` word -> ring state.
STATES_FIN: Final = {0: "running", 1: "finished", 2: "crashed"}
#: The state of a ``/X_t`` whose header geometry does not match the object's size.
NOT_A_RING: Final = "not a ring"
#: ``crash.operation`` -> text.
OPERATIONS: Final = {0: "unknown", 1: "read", 2: "write", 3: "exec"}

#: ``sizeof(sem_t)`` with glibc on 64-bit Linux.  A shorter ``sem.*`` file is not a semaphore:
#: ``sem_open`` would map it and ``sem_getvalue`` would die of SIGBUS.
SEM_T_SIZE: Final = 32

#: Where glibc keeps the named semaphore ``/NAME``: ``SHM_DIR/sem.NAME``.
SEM_PREFIX: Final = "sem."


class OpsError(Exception):
    """A failure to report with exit code 1: on stderr, or with ``--json`` as a JSON object
    ``{"error": message, "command": ..., "name": ..., **details}`` on stdout."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


def shm_path(name: str) -> str:
    """The file of the POSIX shm object ``name`` (``/X_t`` -> ``SHM_DIR/X_t``)."""
    return SHM_DIR + "/" + name[1:]


def sem_path(name: str) -> str:
    """The file of the named semaphore ``name`` (``/X_t_filled`` -> ``SHM_DIR/sem.X_t_filled``)."""
    return SHM_DIR + "/" + SEM_PREFIX + name[1:]
