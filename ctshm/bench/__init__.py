"""``python -m ctshm bench``: ctshm against other IPC mechanisms, two real processes per run.

Workloads (full counts; ``--quick`` runs a tenth of each)::

    W1  200,000 x 64 B     stream
    W2  100,000 x 4 KiB    stream
    W3    2,000 x 1 MiB    stream, 32 messages in flight
    W4   20,000 x 64 B     ping-pong round trips (median and p99 µs), one channel per direction
    SP1      40 x 64 MiB   capacity 5, slots filled whole, the consumer holds 3 guards,
                           releases out of order and reads every byte (only when named:
                           --workloads SP1; --sp1-slot-mib sets the slot size)

Every run forks two fresh processes from the bench process (producer + consumer, or client +
echo server); both set up, report ready, and start together.  A stream's time runs from the
producer's first send to the consumer's receipt of the last message (CLOCK_MONOTONIC, the
same clock in both processes).  Each message carries its sequence number in its first 8 bytes
(little-endian u64); the consumer reads it and the length of every message and counts
mismatches, so a run is *verified* only if every message arrived, in order, intact.

Peers (each used the way its documentation suggests):

``ctshm-records``  :class:`~ctshm.records.RecordWriter` (``append``, 64 KiB batches) and
                   :class:`~ctshm.records.RecordReader` (zero-copy record views).
``ctshm-slot``     one message per slot: ``ring.put(msg)`` / ``ring.access()`` + ``release()``.
``ctshm-fast``     the same on a ring created with ``fast=True`` (ctshm peers only).
``ctshm-batch``    one message per slot in batches on a fast ring: ``ring.put_many`` of 32
                   messages / ``ring.get_many()`` (streams only).
``mp.Queue``       ``multiprocessing.Queue(maxsize)``: ``put(bytes)`` / ``get()``.
``mp.Pipe``        ``multiprocessing.Pipe()``: ``send_bytes`` / ``recv_bytes``.
``os.pipe``        raw ``os.write`` / ``os.readv`` of each message (no user-space buffering).
``posix_ipc+shm``  a hand-written ring: ``posix_ipc`` semaphores (filled/empty) + one mmap'd
                   ``posix_ipc.SharedMemory`` of 32 slots.                       [bench extra]
``faster-fifo``    ``faster_fifo.Queue``: ``put`` / ``get_many`` (``get`` for ping-pong).  [extra]
``iceoryx2``       publish-subscribe of ``Slice[c_uint8]``, publisher backpressure
                   ``RetryUntilDelivered``, busy-polling subscriber.                [extra]
``rust-seed``      the original Rust ring (``seedref produce`` -> ``seedref consume``, both
                   Rust, 2 MiB slots, same frame sizes) on W1-W3; on SP1 ``seedref produce``
                   -> a ctshm consumer.  Found via ``SEEDREF_BIN`` (the binary),
                   ``CTSHM_SEEDREF`` (a seedref directory whose ``build.sh`` is run), or
                   ``shared/seedref/build.sh`` in the current directory or a parent.

``--oversubscribe K`` runs K pairs of every peer at once (2K processes) on the W workloads;
the table's rates are then aggregate (all pairs' messages over the window from the first
start to the last end; ping-pong: the median of the pairs' medians, the worst p99) and the
per-pair range is shown.  SP1 compares ctshm -> ctshm and Rust seed -> ctshm with one process
doing the same fills (``memcpy``) and fills + checksums (``fill+verify``): the upper limit.
Every table gives the machine (nproc, CPU model), the 1-minute load average before and
after its runs, and the spread of each peer's repeats ((max - min) / best).

Ratios are ``ctshm / peer`` in performance terms (> 1: ctshm is faster): throughput
``ctshm_rate / peer_rate``, latency ``peer_median / ctshm_median``.  The ctshm reference is
``ctshm-records`` for W1/W2 and ``ctshm-slot`` for W3/W4/SP1.

Every shared-memory object and semaphore a run creates is removed in a ``finally`` (also when
a child fails or hangs: children are killed after ``--timeout`` seconds).  Numbers depend on
what else the machine runs: each run is repeated (``--repeat``, best kept) and peers are
interleaved; never assert on them in tests.

Modules: ``harness`` (workloads, the :class:`Peer` interface, forked pairs), ``peers_ctshm``,
``peers_stdlib``, ``peers_extra``, ``seedref`` (the Rust peer and its locator), ``sp1``,
``footprint`` (import cost, /dev/shm pages), ``report`` (machine, targets, tables) and
``driver`` (the matrix and ``main``).
"""

from __future__ import annotations

from .driver import PEERS, add_arguments, main, run, run_from_args
from .footprint import import_cost, memory_check
from .harness import WORKLOADS, Peer, Settings, Workload, run_once
from .report import format_table, targets
from .seedref import find_seedref

__all__ = ["PEERS", "WORKLOADS", "Peer", "Settings", "Workload", "add_arguments",
           "find_seedref", "format_table", "import_cost", "main", "memory_check", "run",
           "run_from_args", "run_once", "targets"]
