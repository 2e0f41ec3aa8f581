"""The bench driver: the peer registry, the run matrix, command-line flags, ``main``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any, Callable, Final, Optional

from .. import __version__, atomics, layout, libc
from . import report as rep, sp1
from .compact import format_compact
from .harness import (
    DEFAULT_WORKLOADS,
    QUICK_SCALE,
    RECORD_BATCH,
    REFERENCE,
    SP1_SLOT_MIB,
    WORKLOADS,
    MiB,
    Peer,
    Settings,
    Workload,
    ignore,
    run_once,
    scaled,
    sp1_workload,
)
from .peers_ctshm import CtshmBatch, CtshmChannel, CtshmFast, CtshmRecords, CtshmSlot
from .peers_extra import FasterFifo, Iceoryx2, PosixIpc
from .peers_stdlib import MpPipe, MpQueue, OsPipe
from .seedref import RustSeed

PEERS: Final[dict[str, Peer]] = {p.name: p for p in (
    CtshmRecords(), CtshmChannel(), CtshmSlot(), CtshmFast(), CtshmBatch(), MpQueue(), MpPipe(),
    OsPipe(), PosixIpc(), FasterFifo(), Iceoryx2(), RustSeed())}


def _best(runs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    good = [r for r in runs if r.get("ok") and r.get("verified")]
    if not good:
        return dict(runs[-1])
    if kind == "pingpong":
        best = min(good, key=lambda r: float(r.get("median_us", float("inf"))))
    else:
        best = max(good, key=lambda r: float(r.get("msgs_per_s", 0.0)))
    return dict(best)


def _ratio(ref: Optional[dict[str, Any]], r: dict[str, Any], kind: str) -> Optional[float]:
    if not ref or not ref.get("verified") or not r.get("verified"):
        return None
    if kind == "pingpong":
        return r["median_us"] / ref["median_us"] if ref.get("median_us") else None
    return ref["msgs_per_s"] / r["msgs_per_s"] if r.get("msgs_per_s") else None


def _summarize(runs: dict[str, list[dict[str, Any]]], wl: Workload, ref: str
               ) -> dict[str, dict[str, Any]]:
    """Best run per peer, its repeats' figures and their spread, the ratio to ``ref``."""
    res = {n: _best(rs, wl.kind) for n, rs in runs.items()}
    key = "median_us" if wl.kind == "pingpong" else "msgs_per_s"
    for n, rs in runs.items():
        vals = [float(r.get(key, 0.0)) for r in rs if r.get("verified")]
        res[n]["runs"] = [round(r.get(key, 0.0), 3) for r in rs]
        res[n]["spread"] = rep.spread(vals, higher_is_better=wl.kind != "pingpong")
    refr = res.get(ref)
    for r in res.values():
        r["ratio"] = _ratio(refr, r, wl.kind)
    return res


def _environment(spin: Optional[float]) -> dict[str, Any]:
    import platform

    try:
        backend = atomics.get_backend().name
    except atomics.AtomicsUnavailable as e:  # pragma: no cover
        backend = f"none ({e})"
    return {"python": sys.version.split()[0], "platform": f"{platform.system()} "
            f"{platform.machine()}", **rep.machine(), "loadavg_start": rep.loadavg(),
            "atomics_backend": backend, "plain_ordered_access": atomics.PLAIN_ORDERED_ACCESS,
            "records_batch_bytes": RECORD_BATCH, "ring_spin_s": spin}


def run(workloads: list[str], peers: list[str], scale: float, repeat: int, timeout: float,
        prefix: str, log: Callable[[str], None], with_import: bool = True,
        with_memory: bool = True, import_n: int = 10, *, pairs: int = 1,
        spin: Optional[float] = None, sp1_slot_mib: int = SP1_SLOT_MIB,
        sp1_reader: str = "auto") -> dict[str, Any]:
    """Run the matrix; return the JSON-able report.

    ``pairs`` producer/consumer pairs run at once for every W workload (SP1: always one)."""
    from .footprint import import_cost, memory_check

    t_begin = time.monotonic()
    wls = dict(WORKLOADS)
    wls["SP1"] = sp1_workload(layout.aligned_slot_size(sp1_slot_mib * MiB))
    settings = Settings(timeout=timeout, spin=spin, pairs=pairs, sp1_reader=sp1_reader)
    avail: dict[str, Optional[str]] = {}
    for name in peers:
        avail[name] = PEERS[name].available()
        if avail[name]:
            log(f"  {name}: unavailable: {avail[name]}")
    report: dict[str, Any] = {
        "ctshm": __version__, "scale": scale, "repeat": repeat,
        "environment": _environment(spin),
        "peers": {n: {"available": avail[n] is None, "reason": avail[n],
                      "extra": PEERS[n].extra, **PEERS[n].describe()} for n in peers},
        "workloads": {},
    }
    if pairs > 1:
        report["oversubscribe"] = pairs
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {w: {} for w in workloads}
    load: dict[str, list[Optional[list[float]]]] = {w: [] for w in workloads}
    baseline: dict[str, list[dict[str, Any]]] = {}
    for r_i in range(repeat):
        for w in workloads:
            wl = wls[w]
            count = scaled(wl, scale)
            if r_i == 0:
                load[w].append(rep.loadavg())
            s = settings._replace(pairs=1) if wl.kind == "sp1" else settings
            for name in peers:
                peer = PEERS[name]
                if avail[name] or wl.kind not in peer.kinds:
                    continue
                r = run_once(peer, wl, count, prefix, s)
                runs[w].setdefault(name, []).append(r)
                log(f"  [{r_i + 1}/{repeat}] {w} {name:14s} {rep.short(r, wl.kind)}")
            if wl.kind == "sp1":
                for name, r in sp1.single_process(wl, count, sp1_reader).items():
                    baseline.setdefault(name, []).append(r)
                    log(f"  [{r_i + 1}/{repeat}] {w} {name:14s} {rep.short(r, wl.kind)}")
            if r_i == repeat - 1:
                load[w].append(rep.loadavg())
    for w in workloads:
        report["workloads"][w] = _workload_report(w, wls[w], scale, runs[w], baseline, load[w],
                                                  sp1_reader, pairs)
    if with_memory:
        report["memory"] = memory_check(prefix)
    if with_import:
        log("  import cost ...")
        report["import"] = import_cost(import_n)
    report["targets"] = rep.targets(report)
    report["seconds"] = time.monotonic() - t_begin
    report["environment"]["loadavg_end"] = rep.loadavg()
    return report


def _workload_report(w: str, wl: Workload, scale: float, runs: dict[str, list[dict[str, Any]]],
                     baseline: dict[str, list[dict[str, Any]]],
                     load: list[Optional[list[float]]], sp1_reader: str, pairs: int
                     ) -> dict[str, Any]:
    """The report's entry for workload ``w``: its figures, its peers' results, the load."""
    d: dict[str, Any] = {"title": wl.title, "kind": wl.kind, "size": wl.size,
                         "count": scaled(wl, scale), "depth": wl.depth,
                         "reference": REFERENCE[w],
                         "results": _summarize(runs, wl, REFERENCE[w]),
                         "loadavg_before": load[0], "loadavg_after": load[-1]}
    if wl.kind == "sp1":
        d["reader"] = sp1.Verifier(wl.size, sp1_reader).name
        d["baseline"] = _summarize(baseline, wl, "")
    elif pairs > 1:
        d["pairs"] = pairs
    return d


def _leftovers(prefix: str) -> list[str]:
    try:
        entries = os.listdir("/dev/shm")
    except OSError:
        return []
    mine = (prefix + "_", "sem." + prefix + "_")
    return sorted(e for e in entries if e.startswith(mine))


def _iox2_entries() -> set[str]:
    try:
        return {e for e in os.listdir("/dev/shm") if e.startswith("iox2_")}
    except OSError:
        return set()


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m ctshm bench [flags]``."""
    from . import __doc__ as doc

    p = argparse.ArgumentParser(prog="python -m ctshm bench", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run_from_args(p.parse_args(argv))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help=f"scaled-down counts (x{QUICK_SCALE}), one repeat: well under 20 s")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--full-report", action="store_true",
                   help="every peer's row, the machine, memory and import figures")
    p.add_argument("--targets", action="store_true",
                   help="also the project's internal performance targets")
    p.add_argument("--repeat", type=int, default=None,
                   help="runs per peer and workload, best kept (default 3; --quick: 1)")
    p.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                   help="comma-separated subset of " + ", ".join(WORKLOADS)
                   + " (SP1 runs only when named)")
    p.add_argument("--peers", default=",".join(PEERS),
                   help="comma-separated subset of: " + ", ".join(PEERS))
    p.add_argument("--exclude", default="", help="comma-separated peers to skip")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    p.add_argument("--no-import", action="store_true", help="skip the import-cost check")
    p.add_argument("--no-memory", action="store_true", help="skip the /dev/shm footprint check")
    p.add_argument("--oversubscribe", type=int, default=1, metavar="K",
                   help="run K producer/consumer pairs at once per peer (2K processes) on "
                   "the W workloads; rates are aggregate, per-pair ranges shown")
    p.add_argument("--sp1-slot-mib", type=int, default=SP1_SLOT_MIB, metavar="MIB",
                   help=f"SP1 slot size in MiB, rounded up to 2 MiB (default {SP1_SLOT_MIB})")
    p.add_argument("--sp1-reader", choices=sp1.READERS, default="auto",
                   help="how the SP1 consumer reads every byte: numpy (u64 sum) or "
                   "memoryview (zlib.adler32); auto: numpy when installed")
    p.add_argument("--queues", action="store_true",
                   help="also run the ShmQueue workloads Q1-Q7 (ctshm.bench.queues)")
    p.add_argument("--broadcast", action="store_true",
                   help="run the broadcast workloads instead (1 writer -> 4 readers: "
                        "ShmBroadcast against a pipe / mp.Queue per reader and iceoryx2)")
    p.add_argument("--scale", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--id-prefix", default=None, help=argparse.SUPPRESS)
    p.add_argument("--import-n", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--spin", type=float, default=None, help=argparse.SUPPRESS)


def _selection(args: argparse.Namespace) -> tuple[list[str], list[str], Optional[str]]:
    """The workloads and peers ``args`` names, and what is wrong with the arguments (None:
    nothing)."""
    workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    for w in workloads:
        if w not in WORKLOADS:
            return workloads, [], f"unknown workload {w!r}: use {', '.join(WORKLOADS)}"
    excluded = {x.strip() for x in args.exclude.split(",") if x.strip()}
    peers = [x.strip() for x in args.peers.split(",") if x.strip() and x.strip() not in excluded]
    for n in peers:
        if n not in PEERS:
            return workloads, peers, f"unknown peer {n!r}: use {', '.join(PEERS)}"
    if args.oversubscribe < 1 or args.sp1_slot_mib < 1:
        return workloads, peers, "--oversubscribe and --sp1-slot-mib must be >= 1"
    if not libc.IS_LINUX:
        return workloads, peers, "python -m ctshm bench runs on Linux only"
    return workloads, peers, None


def run_from_args(args: argparse.Namespace) -> int:
    scale = args.scale if args.scale is not None else (QUICK_SCALE if args.quick else 1.0)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    workloads, peers, problem = _selection(args)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    prefix = args.id_prefix or f"cb{os.getpid():x}"
    def log(line: str) -> None:  # progress: stderr, so stdout is only the report
        print(line, file=sys.stderr, flush=True)

    iox_before = _iox2_entries()
    if getattr(args, "broadcast", False):
        from . import broadcasts
        try:
            return broadcasts.main(args.quick, args.repeat, args.timeout, prefix)
        finally:
            _cleanup_iox2(iox_before)
    old_term = signal.signal(signal.SIGTERM, _sigterm)
    try:
        log(f"ctshm bench: workloads {','.join(workloads)}; peers {','.join(peers)}; "
            f"scale {scale}; repeat {repeat}"
            + (f"; {args.oversubscribe} pairs at once" if args.oversubscribe > 1 else ""))
        report = run(workloads, peers, scale, repeat, args.timeout, prefix, log,
                     with_import=not args.no_import, with_memory=not args.no_memory,
                     import_n=args.import_n or (5 if args.quick else 10),
                     pairs=args.oversubscribe, spin=args.spin,
                     sp1_slot_mib=args.sp1_slot_mib, sp1_reader=args.sp1_reader)
        if args.queues:
            from . import queues as qbench
            report["queues"] = qbench.run(scale, repeat, prefix=prefix + "q", log=log)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        leaks = _leftovers(prefix)
        for e in leaks:  # never expected: every run cleans up; this is the last line
            ignore(OSError, os.unlink, os.path.join("/dev/shm", e))
        _cleanup_iox2(iox_before)
    report["leaked_and_removed"] = leaks
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    elif args.full_report:
        print(rep.format_table(report, with_targets=args.targets))
    else:
        print(format_compact(report, targets=args.targets))
    if "queues" in report and not args.json:
        from . import queues as qbench
        print(qbench.format_table(report["queues"]))
    return 0


def _cleanup_iox2(before: set[str]) -> None:
    """iceoryx2 removes its service files when the last port goes; stale ones of a killed
    child are removed with its dead-node cleanup.  Its shared ``global_mgmt`` file stays
    unless the bench created it (it did not exist before and no iceoryx2 node is left)."""
    new = _iox2_entries() - before
    if not new:
        return
    try:
        import iceoryx2 as iox2  # type: ignore[import-untyped,import-not-found,unused-ignore]

        iox2.set_log_level(iox2.LogLevel.Error)
        node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        node.try_cleanup_dead_nodes()
        del node
    except Exception:
        pass
    if not before:
        leftover = _iox2_entries()
        if all(e.endswith(".global_mgmt") for e in leftover):
            for e in leftover:
                ignore(OSError, os.unlink, os.path.join("/dev/shm", e))


def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)
