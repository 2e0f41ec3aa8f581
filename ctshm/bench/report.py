"""Report: the machine a run used, the targets, and the text tables."""

from __future__ import annotations

import os
from typing import Any, Optional

from .harness import MiB


def loadavg() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (x86 ``model name``; arm ``Model``/``CPU part``), or "unknown"."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        text = ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            found.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "model", "hardware", "cpu model", "cpu part"):
        if key in found:
            return found[key]
    import platform

    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """nproc (CPUs this process may use), the machine's CPU count and CPU model."""
    try:
        nproc = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        nproc = os.cpu_count() or 0
    return {"nproc": nproc, "cpus": os.cpu_count(), "cpu_model": cpu_model()}


def spread(values: list[float], higher_is_better: bool) -> Optional[float]:
    """(max - min) / best of the repeats (None for fewer than two)."""
    vals = [v for v in values if v]
    if len(vals) < 2:
        return None
    best = max(vals) if higher_is_better else min(vals)
    return (max(vals) - min(vals)) / best


def _rate(report: dict[str, Any], w: str, peer: str, key: str = "msgs_per_s"
          ) -> Optional[float]:
    r = report["workloads"].get(w, {}).get("results", {}).get(peer)
    if not r or not r.get("verified"):
        return None
    v = r.get(key)
    return float(v) if v else None


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets with the measured figures (informational, never asserted)."""
    out: list[dict[str, Any]] = []

    def add(name: str, measured: Optional[float], against: Optional[float], need: float,
            unit: str, higher_is_better: bool = True, note: str = "") -> None:
        ratio = None
        met = None
        if measured is not None and against is not None and against > 0:
            ratio = measured / against
            met = ratio >= need if higher_is_better else ratio <= need
        out.append({"target": name, "measured": measured, "against": against,
                    "ratio": ratio, "need": need, "cmp": ">=" if higher_is_better else "<=",
                    "met": met, "unit": unit, "note": note})

    rec = _rate(report, "W1", "ctshm-records")
    seed1 = _rate(report, "W1", "rust-seed")
    add("W1 batched >= 1,000,000 msg/s", rec, 1e6 if rec is not None else None, 1.0, "msg/s")
    add("W1 batched >= 2x Rust seed", rec, seed1, 2.0, "msg/s")
    add("W1 one-per-slot >= 0.6x Rust seed", _rate(report, "W1", "ctshm-slot"), seed1, 0.6,
        "msg/s")
    slot3 = _rate(report, "W3", "ctshm-slot")
    add("W3 >= 0.9x Rust seed", slot3, _rate(report, "W3", "rust-seed"), 0.9, "msg/s")
    add("W3 >= iceoryx2", slot3, _rate(report, "W3", "iceoryx2"), 1.0, "msg/s")
    add("W4 median <= 0.75x os.pipe", _rate(report, "W4", "ctshm-slot", "median_us"),
        _rate(report, "W4", "os.pipe", "median_us"), 0.75, "µs", higher_is_better=False)
    add("W2 >= 2x multiprocessing.Pipe (records)", _rate(report, "W2", "ctshm-records"),
        _rate(report, "W2", "mp.Pipe"), 2.0, "msg/s")
    add("W2 >= 2x multiprocessing.Pipe (one-per-slot)", _rate(report, "W2", "ctshm-slot"),
        _rate(report, "W2", "mp.Pipe"), 2.0, "msg/s", note="informational")
    fast1 = _rate(report, "W1", "ctshm-fast")
    add("W1 one-per-slot, fast ring >= 0.6x Rust seed", fast1, seed1, 0.6, "msg/s")
    add("W1 one-per-slot, fast ring >= os.pipe", fast1, _rate(report, "W1", "os.pipe"), 1.0,
        "msg/s")
    add("W2 one-per-slot, fast ring >= 2x os.pipe", _rate(report, "W2", "ctshm-fast"),
        _rate(report, "W2", "os.pipe"), 2.0, "msg/s")
    fast4 = _rate(report, "W4", "ctshm-fast", "median_us")
    add("W4 median, fast ring <= 0.5x os.pipe", fast4,
        _rate(report, "W4", "os.pipe", "median_us"), 0.5, "µs", higher_is_better=False)
    add("W4 median, fast ring <= iceoryx2", fast4,
        _rate(report, "W4", "iceoryx2", "median_us"), 1.0, "µs", higher_is_better=False)
    imp = report.get("import")
    if imp:
        it = imp["default"]["importtime_ms"]
        add("import <= 1.3x multiprocessing.shared_memory (-X importtime)", it["ctshm"],
            it["multiprocessing.shared_memory"], 1.3, "ms", higher_is_better=False)
        wm = imp["default"]["wall_minus_pass_ms"]
        add("import <= 1.3x multiprocessing.shared_memory (wall - python -c pass)",
            wm["ctshm"], wm["multiprocessing.shared_memory"], 1.3, "ms",
            higher_is_better=False, note="noisy: difference of two process wall times")
    mem = report.get("memory")
    if mem:
        add("memory ~1 page per touched slot", mem["pages_per_touched_slot"], 1.0, 1.5,
            "pages", higher_is_better=False, note=f"shmem THP: {mem['shmem_thp']}")
    return out


def _machine_line(report: dict[str, Any], d: dict[str, Any]) -> str:
    env = report["environment"]
    la0, la1 = d.get("loadavg_before"), d.get("loadavg_after")
    l0 = f"{la0[0]:.2f}" if la0 else "?"
    l1 = f"{la1[0]:.2f}" if la1 else "?"
    pairs = report.get("oversubscribe", 1) if d["kind"] != "sp1" else 1
    procs = f"; {2 * pairs} processes at once" if pairs > 1 else ""
    return (f"  machine: nproc {env.get('nproc')}, {env.get('cpu_model')}; load (1 min) "
            f"{l0} -> {l1}{procs}; spread = (max - min) / best of {report['repeat']} "
            f"repeat{'s' if report['repeat'] != 1 else ''}")


def _spread(r: dict[str, Any]) -> str:
    s = r.get("spread")
    return f"{s * 100:.0f}%" if s is not None else "-"


def _check(r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return "ERROR: " + str(r.get("error", ""))[:90]
    if r.get("verified"):
        return f"verified {r['count']:,}"
    return f"NOT VERIFIED: {r.get('first_error', '')[:80]}"


def _per_pair(r: dict[str, Any], key: str, fmt: str) -> str:
    pp = r.get("per_pair")
    if not pp:
        return ""
    vals = [p.get(key, 0.0) for p in pp]
    return f"  per pair {format(min(vals), fmt)} .. {format(max(vals), fmt)}"


SP1_LABELS = {"ctshm-slot": "ctshm -> ctshm", "rust-seed": "Rust seed -> ctshm"}


def _sp1_table(report: dict[str, Any], w: str, d: dict[str, Any]) -> list[str]:
    lines = [f"{w}  {d['title']}  (measured: {d['count']:,} of {d['size'] // MiB} MiB; "
             f"reader {d.get('reader')}; ratio = ctshm/peer, reference {d['reference']})",
             _machine_line(report, d),
             f"  {'peer':34s} {'GB/s':>7s} {'seconds':>8s} {'of memcpy':>9s} {'ratio':>7s} "
             f"{'spread':>6s}  check"]
    base = d.get("baseline", {}).get("memcpy (1 process)", {}).get("gb_per_s")
    rows = [(f"{n} ({SP1_LABELS.get(n, n)})", r) for n, r in d["results"].items()]
    rows += list(d.get("baseline", {}).items())
    for label, r in rows:
        gbs = r.get("gb_per_s", 0.0)
        of = f"{gbs / base:.2f}" if base and r.get("verified") else "-"
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
        check = _check(r)
        if r.get("verified") and "bytes" in r:
            check += f" ({r['bytes']:,} B"
            if "max_held" in r:
                check += (f", {r['max_held']} held, {r['releases_out_of_order']} out-of-order "
                          f"releases")
            check += ")"
        lines.append(f"  {label:34s} {gbs:7.2f} {r.get('elapsed_s', 0):8.3f} {of:>9s} "
                     f"{ratio:>7s} {_spread(r):>6s}  {check}")
    return lines


def format_table(report: dict[str, Any], with_targets: bool = True) -> str:
    lines = []
    env = report["environment"]
    lines.append(f"ctshm {report['ctshm']} bench  python {env['python']}  {env['platform']}  "
                 f"{env['cpus']} cpus  load {env.get('loadavg_start')} -> "
                 f"{env.get('loadavg_end')}  scale {report['scale']}  best of "
                 f"{report['repeat']}")
    pairs = report.get("oversubscribe", 1)
    for w, d in report["workloads"].items():
        lines.append("")
        if d["kind"] == "sp1":
            lines.extend(_sp1_table(report, w, d))
            continue
        many = (f"; {pairs} pairs at once, count per pair, rates aggregate"
                if pairs > 1 else "")
        lines.append(f"{w}  {d['title']}  (measured: {d['count']:,}{many}; ratio = ctshm/peer, "
                     f"reference {d['reference']})")
        lines.append(_machine_line(report, d))
        if d["kind"] == "pingpong":
            lines.append(f"  {'peer':15s} {'median µs':>10s} {'p99 µs':>10s} {'mean µs':>10s} "
                         f"{'ratio':>7s} {'spread':>6s}  check")
        else:
            lines.append(f"  {'peer':15s} {'msg/s':>12s} {'MB/s':>10s} {'seconds':>8s} "
                         f"{'ratio':>7s} {'spread':>6s}  check")
        for n, r in d["results"].items():
            ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
            check = _check(r)
            if d["kind"] == "pingpong":
                lines.append(f"  {n:15s} {r.get('median_us', 0):10.1f} {r.get('p99_us', 0):10.1f}"
                             f" {r.get('mean_us', 0):10.1f} {ratio:>7s} {_spread(r):>6s}  {check}"
                             + _per_pair(r, "median_us", ".1f"))
            else:
                lines.append(f"  {n:15s} {r.get('msgs_per_s', 0):12,.0f} "
                             f"{r.get('mb_per_s', 0):10,.1f} {r.get('elapsed_s', 0):8.3f} "
                             f"{ratio:>7s} {_spread(r):>6s}  {check}"
                             + _per_pair(r, "msgs_per_s", ",.0f"))
    unavailable = {n: p["reason"] for n, p in report["peers"].items() if not p["available"]}
    if unavailable:
        lines.append("")
        for n, why in unavailable.items():
            lines.append(f"not measured: {n}: {why}")
    mem = report.get("memory")
    if mem:
        lines.append("")
        lines.append(f"memory: ring of {mem['capacity']} x 2 MiB slots, first page of each "
                     f"written: {mem['allocated_after']:,} bytes allocated in /dev/shm "
                     f"({mem['pages_per_touched_slot']:.2f} pages per touched slot beyond the "
                     f"{mem['header_pages']} header pages; shmem THP {mem['shmem_thp']})")
    imp = report.get("import")
    if imp:
        d = imp["default"]
        it, wm = d["importtime_ms"], d["wall_minus_pass_ms"]
        lines.append(f"import (best of {imp['n']}): -X importtime ctshm "
                     f"{it['ctshm']:.1f} ms vs multiprocessing.shared_memory "
                     f"{it['multiprocessing.shared_memory']:.1f} ms "
                     f"(x{d['ratio_importtime']:.2f}); wall - 'python -c pass': "
                     f"{wm['ctshm']:.1f} vs {wm['multiprocessing.shared_memory']:.1f} ms "
                     f"(x{d['ratio_wall_minus_pass']:.2f}); -S: x"
                     f"{imp['isolated_-S']['ratio_importtime']:.2f}")
    if with_targets and report.get("targets"):
        lines.append("")
        lines.append("targets (informational; measured in this run):")
        for t in report["targets"]:
            met = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
            m = _fmt_num(t["measured"])
            a = _fmt_num(t["against"])
            ratio = f"{t['ratio']:.2f}" if t["ratio"] is not None else "-"
            lines.append(f"  {t['target']:62s} {m:>12s} vs {a:>12s}  ratio {ratio:>6s} "
                         f"(need {t['cmp']} {t['need']})  "
                         f"{met}")
    lines.append("")
    lines.append(f"total {report['seconds']:.1f} s")
    return "\n".join(lines)


def short(r: dict[str, Any], kind: str) -> str:
    """One progress line for a run."""
    if not r.get("ok"):
        return "ERROR " + str(r.get("error", ""))[:200]
    v = "verified" if r.get("verified") else f"NOT VERIFIED ({r.get('first_error', '')})"
    if kind == "pingpong":
        return f"median {r.get('median_us', 0):8.1f} µs  p99 {r.get('p99_us', 0):8.1f} µs  {v}"
    if kind == "sp1":
        return f"{r.get('gb_per_s', 0):8.2f} GB/s  {v}"
    return f"{r.get('msgs_per_s', 0):12,.0f} msg/s  {r.get('mb_per_s', 0):9,.1f} MB/s  {v}"


def _fmt_num(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.2f}"
