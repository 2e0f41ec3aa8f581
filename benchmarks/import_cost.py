"""Import cost: ``import ctshm`` vs ``import multiprocessing.shared_memory``, fresh interpreters.

Fresh interpreters, best of N (interleaved), after one warm-up run with bytecode writing
enabled (so ctshm, like the standard library, is imported from ``.pyc`` files):

* ``-X importtime``: the time the ``import`` statement adds (its top-level imports that
  interpreter start-up did not already make), with and without ``site`` (``-S``);
* wall time of the whole ``python -c "import X"`` process, and that minus ``python -c pass``;
* the modules that cost ctshm the most (self time, from the best ``-X importtime`` run).

Run: ``python benchmarks/import_cost.py [-n N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ctshm.bench.footprint import _IMPORTTIME, import_cost  # noqa: E402


def heaviest(module: str, top: int = 12) -> list[tuple[str, int, int]]:
    """(module, self µs, cumulative µs) of the costliest imports below ``module``."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    startup = {name for name, _, _ in _lines("pass", env)}
    best: dict[str, tuple[int, int]] = {}
    for _ in range(5):
        for name, self_us, cum_us in _lines(f"import {module}", env):
            if name in startup:
                continue
            old = best.get(name)
            if old is None or self_us < old[0]:
                best[name] = (self_us, cum_us)
    rows = sorted(((n, s, c) for n, (s, c) in best.items()), key=lambda r: -r[1])
    return rows[:top]


def _lines(code: str, env: dict[str, str]) -> list[tuple[str, int, int]]:
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env,
                       capture_output=True, text=True, check=True, cwd=ROOT)
    out = []
    for line in p.stderr.splitlines():
        m = _IMPORTTIME.match(line)
        if m:
            out.append((m.group(4), int(m.group(1)), int(m.group(2))))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=15, help="runs per measurement (best kept)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    report = import_cost(args.n)
    report["heaviest_under_ctshm"] = heaviest("ctshm")
    report["heaviest_under_multiprocessing.shared_memory"] = heaviest(
        "multiprocessing.shared_memory")
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{sys.executable}, best of {args.n}")
    for mode in ("default", "isolated_-S"):
        d = report[mode]
        it, wall, wm = d["importtime_ms"], d["wall_ms"], d["wall_minus_pass_ms"]
        print(f"\n[{mode}]")
        print(f"  -X importtime: ctshm {it['ctshm']:.1f} ms, multiprocessing.shared_memory "
              f"{it['multiprocessing.shared_memory']:.1f} ms -> ratio "
              f"{d['ratio_importtime']:.2f}")
        print(f"  wall: pass {wall['pass']:.1f} ms, ctshm {wall['ctshm']:.1f} ms, "
              f"multiprocessing.shared_memory {wall['multiprocessing.shared_memory']:.1f} ms "
              f"-> ratio {d['ratio_wall']:.2f}")
        print(f"  wall - pass: ctshm {wm['ctshm']:.1f} ms, multiprocessing.shared_memory "
              f"{wm['multiprocessing.shared_memory']:.1f} ms -> ratio "
              f"{d['ratio_wall_minus_pass']:.2f}")
    for key in ("heaviest_under_ctshm", "heaviest_under_multiprocessing.shared_memory"):
        print(f"\n{key.replace('_', ' ')} (self µs, cumulative µs):")
        for name, s, c in report[key]:
            print(f"  {name:40s} {s:7d} {c:8d}")


if __name__ == "__main__":
    main()
