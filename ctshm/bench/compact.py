"""The default text of ``python -m ctshm bench``: one short table per workload and a
verdict line each, the peers that could not be measured on one line, about 30 lines in all
(``--full-report``: every ctshm variant, the machine, memory and import figures;
``--targets``: the project's internal performance targets)."""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["format_compact"]

#: What the reference peer of each workload is called in the short table.
_LABEL = {"ctshm-records": "ctshm (records)", "ctshm-slot": "ctshm (one per slot)",
          "ctshm-fast": "ctshm (fast ring)", "ctshm-channel": "ctshm (channel)"}


def _times(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}x faster" if x >= 1 else f"{1 / x:.1f}x slower" if x > 0 else "-"


def _row(kind: str, label: str, r: dict[str, Any], ref: bool) -> str:
    ratio = "" if ref else _times(r.get("ratio"))
    bad = "" if r.get("verified") else "  NOT VERIFIED"
    if kind == "pingpong":
        return (f"  {label:24s} {r.get('median_us', 0):10.1f} {r.get('p99_us', 0):9.1f}  "
                f"{ratio:>13s}{bad}")
    return (f"  {label:24s} {r.get('msgs_per_s', 0):12,.0f} {r.get('mb_per_s', 0):9,.1f}  "
            f"{ratio:>13s}{bad}")


def _verdict(kind: str, label: str, others: dict[str, dict[str, Any]]) -> str:
    if not others:
        return "  -> nothing else was measured"
    faster = {n: r["ratio"] for n, r in others.items() if (r.get("ratio") or 0) >= 1}
    slower = {n: 1 / r["ratio"] for n, r in others.items() if 0 < (r.get("ratio") or 0) < 1}
    better = "lower latency than" if kind == "pingpong" else "faster than"
    parts = []
    if faster:
        lo, hi = min(faster.values()), max(faster.values())
        span = f"{lo:.1f}x" if abs(hi - lo) < 0.05 else f"{lo:.1f}-{hi:.1f}x"
        parts.append(f"{span} {better} {_names(list(faster))}")
    if slower:
        most = max(slower.values())
        verb = "is" if len(slower) == 1 else "are"
        parts.append(f"{_names(list(slower))} {verb} ahead (up to {most:.1f}x)")
    # One line while it fits a 100-column screen, else each part on its own line.
    line = f"  -> {label}: " + "; ".join(parts)
    return line if len(line) <= 100 else f"  -> {label}: " + ";\n     ".join(parts)


def _names(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 2 else f"{len(names)} peers"


def _missing(report: dict[str, Any]) -> Optional[str]:
    extras, other = [], []
    for n, p in report["peers"].items():
        if p["available"]:
            continue
        if p.get("extra"):
            extras.append(n)
        elif n == "rust-seed":
            other.append("rust-seed (set SEEDREF_BIN to a built seedref binary)")
        else:
            other.append(f"{n} ({p['reason']})")
    if extras:
        other.insert(0, f"{', '.join(extras)} (pip install 'ctshm[bench]')")
    return "not measured: " + "; ".join(other) if other else None


def format_compact(report: dict[str, Any], targets: bool = False) -> str:
    env = report["environment"]
    load = env.get("loadavg_start") or ["?"]
    lines = [f"ctshm {report['ctshm']} bench: python {env['python']}, {env['platform']}, "
             f"{env['cpus']} cpus, load {load[0]}: compare ratios, not rates"]
    for w, d in report["workloads"].items():
        kind, ref = d["kind"], d["reference"]
        results = d["results"]
        if kind == "sp1":
            lines.append(f"{w}  {d['title']}: see --full-report")
            continue
        head = (" median µs    p99 µs" if kind == "pingpong" else "     msg/s      MB/s")
        title = d["title"].split(", ")[0]  # "2,000 x 1 MiB stream, 32 in flight": the gist
        lines.append(f"{w:4s}{title:24s} {head}  ctshm is ...")
        label = _LABEL.get(ref, ref)
        if ref in results:
            lines.append(_row(kind, label, results[ref], True))
        others = {n: r for n, r in results.items() if not n.startswith("ctshm")}
        for n, r in others.items():
            lines.append(_row(kind, n, r, False))
        lines.append(_verdict(kind, label, others))
    missing = _missing(report)
    if missing:
        lines.append(missing)
    if targets and report.get("targets"):
        lines.append("targets (the project's own, informational):")
        for t in report["targets"]:
            met = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
            ratio = f"{t['ratio']:.2f}" if t["ratio"] is not None else "-"
            lines.append(f"  {t['target']:60s} ratio {ratio:>6s} (need {t['cmp']} "
                         f"{t['need']})  {met}")
    lines.append(f"total {report['seconds']:.1f} s; every ctshm variant and the machine: "
                 "--full-report")
    return "\n".join(lines)
