"""The accounts benchmark's figures, and the table that prints them.

Wall times are medians over rounds; the best (minimum) of the rounds is printed beside the
targets too, because on a shared machine load from elsewhere only ever adds time. CPU time
(user + system of the whole process tree) is printed as a second opinion: it moves much less
with load than wall time does.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from accounts_workload import SCENARIOS

__all__ = ["PlanTiming", "Sample", "TARGETS", "render"]

KNOWN = ("floor", "jcstate", "jcstate --root", "ansible", "salt", "pyinfra")  # column order
# first apply and in-process plan: issue 2; the no-op wall time: issue 16 (was 0.3 s)
TARGETS = {"first_vs_floor": 1.3, "noop_wall": 0.15, "plan_ms": 20.0}


@dataclass
class Sample:
    """One timed run."""

    contender: str
    scenario: str
    round: int
    wall: float
    cpu: float
    maxrss_kib: int
    tree_peak_kib: int
    problems: list[str]


@dataclass
class PlanTiming:
    """The in-process no-op plan, timed ``iterations`` times."""

    iterations: int
    plan_ms: list[float]  # engine.plan: facts + diff
    full_ms: list[float]  # load + select + render + merge + device facts + plan
    changes: int  # changes + errors the no-op planned (must be 0)


Pick = Callable[[list[float]], float]


def _value(samples: list[Sample], who: str, scenario: str, attr: str, pick: Pick) -> float | None:
    values = [getattr(s, attr) for s in samples if s.contender == who and s.scenario == scenario]
    return pick(values) if values else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def _wall(samples: list[Sample], cols: list[str]) -> list[str]:
    pairs = [
        ("jc/floor", "jcstate", "floor"),
        ("jc-root/floor", "jcstate --root", "floor"),
        ("ansible/floor", "ansible", "floor"),
        ("ansible/jc", "ansible", "jcstate"),
        ("salt/jc", "salt", "jcstate"),
        ("pyinfra/jc", "pyinfra", "jcstate"),
    ]
    pairs = [p for p in pairs if p[1] in cols and p[2] in cols]
    lines = [
        "wall time, median seconds",
        f"{'scenario':10}"
        + "".join(f"{c:>16}" for c in cols)
        + "".join(f"{p[0]:>15}" for p in pairs),
    ]
    for sc in SCENARIOS:
        w = {c: _value(samples, c, sc, "wall", statistics.median) for c in cols}
        lines.append(
            f"{sc:10}"
            + "".join(f"{_fmt(w[c], '.3f'):>16}" for c in cols)
            + "".join(f"{_ratio(w[a], w[b]):>15}" for _, a, b in pairs)
        )
    return lines


def _figures(samples: list[Sample], cols: list[str], title: str, attr: str) -> list[str]:
    scale, spec = (1.0, ".3f") if attr == "cpu" else (1 / 1024, ".1f")
    with_ratio = attr == "cpu" and "jcstate" in cols and "floor" in cols
    lines = [
        "",
        title,
        f"{'scenario':10}"
        + "".join(f"{c:>16}" for c in cols)
        + (f"{'jc/floor':>15}" if with_ratio else ""),
    ]
    for sc in SCENARIOS:
        vals = {c: _value(samples, c, sc, attr, statistics.median) for c in cols}
        row = "".join(f"{_fmt(None if v is None else v * scale, spec):>16}" for v in vals.values())
        if with_ratio:
            row += f"{_ratio(vals['jcstate'], vals['floor']):>15}"
        lines.append(f"{sc:10}" + row)
    return lines


def _spread(samples: list[Sample], cols: list[str]) -> list[str]:
    lines = ["", "spread of wall time over rounds, seconds (min–max, n)"]
    for c in cols:
        parts = []
        for sc in SCENARIOS:
            vals = [s.wall for s in samples if s.contender == c and s.scenario == sc]
            parts.append(f"{sc} {min(vals):.3f}–{max(vals):.3f} ({len(vals)})")
        lines.append(f"  {c:15} " + ";  ".join(parts))
    return lines


def _plan(timing: PlanTiming) -> list[str]:
    return [
        "",
        f"in-process no-op plan, engine.plan on Host(root=ROOT), {timing.iterations} runs: "
        f"median {statistics.median(timing.plan_ms):.1f} ms, min {min(timing.plan_ms):.1f}, "
        f"max {max(timing.plan_ms):.1f}; changes + errors planned: {timing.changes}",
        f"in-process load + render + device facts + plan, {len(timing.full_ms)} runs: "
        f"median {statistics.median(timing.full_ms):.1f} ms, min {min(timing.full_ms):.1f}",
    ]


def _verdict(value: float | None, limit: float) -> str:
    return "-" if value is None else ("met" if value <= limit else "MISSED")


def _row(
    label: str, med: float | None, best: float | None, unit: str, spec: str, limit: float
) -> str:
    def cell(v: float | None) -> str:
        return "-" if v is None else f"{_fmt(v, spec)}{unit} {_verdict(v, limit)}"

    return f"  {label:38}{cell(med):>18}{cell(best):>18}"


def _targets(samples: list[Sample], timing: PlanTiming | None) -> list[str]:
    lines = ["", f"{'targets':40}{'median':>18}{'best round':>18}"]

    def ratio(attr: str, pick: Pick) -> float | None:
        a = _value(samples, "jcstate", "first", attr, pick)
        b = _value(samples, "floor", "first", attr, pick)
        return None if a is None or not b else a / b

    def paired(attr: str) -> float | None:
        """Median over rounds of jcstate/floor within a round: the two ran seconds apart."""
        by_round = {
            (s.contender, s.round): getattr(s, attr) for s in samples if s.scenario == "first"
        }
        ratios = [
            v / by_round[("floor", r)]
            for (who, r), v in by_round.items()
            if who == "jcstate" and by_round.get(("floor", r))
        ]
        return statistics.median(ratios) if ratios else None

    limit = TARGETS["first_vs_floor"]
    lines.append(
        _row(
            f"first apply <= {limit}x floor, paired/round", paired("wall"), None, "x", ".2f", limit
        )
    )
    lines.append(
        _row(
            f"first apply <= {limit}x floor, wall",
            ratio("wall", statistics.median),
            ratio("wall", min),
            "x",
            ".2f",
            limit,
        )
    )
    lines.append(
        _row(
            f"first apply <= {limit}x floor, CPU time",
            ratio("cpu", statistics.median),
            ratio("cpu", min),
            "x",
            ".2f",
            limit,
        )
    )
    limit = TARGETS["noop_wall"]
    lines.append(
        _row(
            f"jcstate apply no-op <= {limit} s wall",
            _value(samples, "jcstate", "noop", "wall", statistics.median),
            _value(samples, "jcstate", "noop", "wall", min),
            " s",
            ".3f",
            limit,
        )
    )
    if timing is not None:
        limit = TARGETS["plan_ms"]
        lines.append(
            _row(
                f"in-process no-op plan <= {limit:.0f} ms",
                statistics.median(timing.plan_ms),
                min(timing.plan_ms),
                " ms",
                ".1f",
                limit,
            )
        )
    return lines


def _checks(samples: list[Sample]) -> list[str]:
    bad = [s for s in samples if s.problems]
    if not bad:
        return ["", "checks: every run verified (account files and the tool's own report)"]
    lines = ["", f"checks: {len(bad)} run(s) with PROBLEMS:"]
    lines += [f"  {s.contender} round {s.round} {s.scenario}: {'; '.join(s.problems)}" for s in bad]
    return lines


def render(samples: list[Sample], timing: PlanTiming | None, header: str) -> str:
    """The whole report: wall times with ratios, memory, CPU, spread, plan timing, targets."""
    names = list(dict.fromkeys(s.contender for s in samples))
    cols = [n for n in KNOWN if n in names] + [n for n in names if n not in KNOWN]
    lines = [header, ""]
    lines += _wall(samples, cols)
    lines += _figures(
        samples, cols, "peak RSS of the largest process (ru_maxrss), MiB", "maxrss_kib"
    )
    lines += _figures(
        samples, cols, "peak RSS of the whole process tree (sampled), MiB", "tree_peak_kib"
    )
    lines += _figures(samples, cols, "CPU time, user + system, median seconds", "cpu")
    lines += _spread(samples, cols)
    if timing is not None:
        lines += _plan(timing)
    lines += _targets(samples, timing)
    lines += _checks(samples)
    return "\n".join(lines)
