#!/usr/bin/env python3
"""Writes the figures of a chaos run into docs/reliability.md.

Usage: scripts/chaos_report.py REPORT.json DOC.md

REPORT.json is what the chaos suite writes when KEEL_CHAOS_REPORT names it (``make test-chaos``
does: build/chaos-report.json). The text between ``<!-- chaos-report:start -->`` and
``<!-- chaos-report:end -->`` in DOC.md is replaced by tables of those figures; the rest of the
file is left as it is. Exits 1 when the markers or the report are missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

START = "<!-- chaos-report:start -->"
END = "<!-- chaos-report:end -->"
RPC_ORDER = (
    "log_metric",
    "log_batch",
    "search_runs",
    "create_model_version",
    "get_model_version_by_alias",
    "predict",
)


def _errors(counts: dict[str, int]) -> str:
    return ", ".join(f"{label} x{n}" for label, n in sorted(counts.items())) or "none"


def _soak(name: str, soak: dict[str, Any]) -> list[str]:
    lines = [
        f"**{name}**: {soak['clients']} clients for {soak['seconds']} s against one `keel server` process "
        f"({soak['database']}, local artifacts, {soak['cpus']} CPUs shared by server and clients): "
        f"{soak['total_per_second']} calls/s in all.",
        "",
        "| RPC | calls OK | calls/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---|",
    ]
    rpcs = soak["rpcs"]
    for rpc in [r for r in RPC_ORDER if r in rpcs] + sorted(set(rpcs) - set(RPC_ORDER)):
        f = rpcs[rpc]
        lines.append(
            f"| {rpc} | {f['ok']} | {f['per_second']} | {f['p50_ms']} | {f['p99_ms']} | {_errors(f['errors'])} |"
        )
    points = soak.get("log_batch_points", {})
    lines += [
        "",
        f"Server RSS {soak['rss_start_mib']} MiB at the start, {soak['rss_end_mib']} MiB at the end "
        f"(growth {soak['rss_growth_mib']} MiB; bound {soak['rss_growth_bound_mib']} MiB). "
        f"log_batch points acknowledged {points.get('acknowledged', '?')}, stored {points.get('stored', '?')}; "
        f"model versions {_errors(soak.get('model_versions', {})).replace(' x', ': ')}.",
        "",
    ]
    return lines


def _scenarios(sections: dict[str, Any]) -> list[str]:
    rows = []
    for name, f in sorted(sections.items()):
        if name.startswith("soak"):
            continue
        detail = []
        for key in ("kills", "outages", "outage_seconds", "recovered_seconds", "writers", "seconds"):
            if key in f:
                detail.append(f"{key.replace('_', ' ')} {f[key]}")
        rows.append(
            f"| {name} | {f.get('acknowledged', '')} | {f.get('stored', '')} | {'; '.join(detail)} | {_errors(f.get('errors', {}))} |"
        )
    if not rows:
        return []
    return [
        "| scenario | points acknowledged | points stored | details | errors the writers saw |",
        "|---|---:|---:|---|---|",
        *rows,
        "",
        "(Stored may exceed acknowledged: a write whose reply was lost, and whose retries ran out, "
        "may be stored; it is never stored twice.)",
        "",
    ]


def render(report: dict[str, Any]) -> str:
    sections = report.get("sections", {})
    kind = "full run (`make test-chaos`)" if report.get("full") else "bounded run (the `make test` variants)"
    lines = [
        START,
        "",
        f"Generated {report.get('generated_at', '?')} from a {kind} by `scripts/chaos_report.py`.",
        "",
    ]
    lines += _scenarios(sections)
    for name in ("soak-full", "soak-short"):
        if name in sections:
            lines += _soak("Soak, 60 s" if name == "soak-full" else "Soak, bounded", sections[name])
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    report_path, doc_path = Path(argv[1]), Path(argv[2])
    if not report_path.exists():
        print(f"chaos_report: {report_path} not found: run make test-chaos", file=sys.stderr)
        return 1
    report = json.loads(report_path.read_text())
    text = doc_path.read_text()
    if START not in text or END not in text:
        print(f"chaos_report: {doc_path} lacks the markers {START} / {END}", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    doc_path.write_text(head + render(report) + tail)
    print(f"chaos_report: wrote the figures of {report_path} into {doc_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
