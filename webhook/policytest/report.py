"""How ``mlgate policy test`` shows what it found: text, JSONPatch, YAML or JSON.

``text`` is for people: per object the verdict, every message and a unified diff of the YAML.
``patch`` prints each object's raw JSONPatch, ``yaml`` the mutated manifests (ready for
``kubectl apply -f -``), ``json`` one machine-readable report (``ReportWire``).
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal, TypedDict

import yaml

from webhook.policytest.manifests import ManifestError
from webhook.policytest.runner import ObjectReport, RunReport, Verdict

Output = Literal["text", "patch", "yaml", "json"]
OUTPUTS: tuple[Output, ...] = ("text", "patch", "yaml", "json")
VERDICTS: tuple[Verdict, ...] = ("allowed", "warned", "denied", "error")


class ResultWire(TypedDict):
    policy: str
    rule: str
    status: str
    action: str
    message: str
    path: str


class ObjectWire(TypedDict):
    source: str
    document: int
    item: int | None
    kind: str
    namespace: str
    name: str
    verdict: Verdict
    allowed: bool
    denial: str
    warnings: list[str]
    results: list[ResultWire]
    mutatedBy: list[str]
    patch: list[dict[str, Any]]
    mutated: dict[str, Any]
    notes: list[str]
    error: str


class ErrorWire(TypedDict):
    source: str
    document: int
    item: int | None
    reason: str


class ReportWire(TypedDict):
    objects: list[ObjectWire]
    errors: list[ErrorWire]
    summary: dict[str, int]
    exitCode: int


def render_report(report: RunReport, output: Output) -> tuple[str, str]:
    """(stdout, stderr) text for ``output``; outside ``text`` the summary goes to stderr."""
    summary = format_summary(report)
    if output == "json":
        return json.dumps(build_report_wire(report), indent=2) + "\n", ""
    if output == "yaml":
        return format_yaml(report.objects), format_errors(report.errors) + summary
    if output == "patch":
        return format_patches(report.objects), format_errors(report.errors) + summary
    return format_text(report.objects) + format_errors(report.errors) + summary, ""


# --- text -----------------------------------------------------------------------------------------


def format_text(objects: Sequence[ObjectReport]) -> str:
    return "".join(format_object(o) + "\n" for o in objects)


def format_object(report: ObjectReport) -> str:
    """One object: title and verdict, every message, and the diff of what mutation changed."""
    lines = [f"{report.title}: {report.verdict.upper()}  ({report.manifest.location})"]
    for line in report.denial.splitlines():
        lines.append(f"  deny:  {line}")
    lines += [f"  warn:  {w}" for w in report.warnings]
    for result in report.results:
        if result.failed and result.action == "audit":
            lines.append(f"  audit: [{result.policy}/{result.rule}] {result.message}")
        elif result.status == "skip":
            lines.append(f"  skip:  [{result.policy}/{result.rule}] {result.message}")
    passed = sum(1 for r in report.results if r.status == "pass")
    if passed:
        lines.append(f"  pass:  {passed} rule{'s' if passed != 1 else ''} passed")
    lines += [f"  note:  {n}" for n in report.notes]
    if report.error:
        lines.append(f"  error: {report.error}")
    if report.patch:
        ops = len(report.patch)
        by = ", ".join(report.mutated_by) or "mlgate"
        lines.append(f"  mutated by {by} ({ops} patch operation{'s' if ops != 1 else ''}):")
        lines += ["    " + line for line in format_diff(report).splitlines()]
    elif report.verdict != "error":
        lines.append("  not mutated")
    return "\n".join(lines) + "\n"


def format_diff(report: ObjectReport) -> str:
    """A unified diff of the object's YAML, as submitted and after mlgate's patch."""
    before = dump_yaml(report.original).splitlines(keepends=True)
    after = dump_yaml(report.mutated).splitlines(keepends=True)
    return "".join(
        difflib.unified_diff(
            before,
            after,
            fromfile=f"{report.title} (submitted)",
            tofile=f"{report.title} (after mlgate)",
            n=3,
        )
    )


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=1000)


def format_errors(errors: Sequence[ManifestError]) -> str:
    return "".join(f"ERROR {e}\n" for e in errors)


def count_verdicts(objects: Sequence[ObjectReport]) -> dict[str, int]:
    counts = Counter(o.verdict for o in objects)
    return {verdict: counts.get(verdict, 0) for verdict in VERDICTS}


def format_summary(report: RunReport) -> str:
    counts = count_verdicts(report.objects)
    parts = [f"{counts[v]} {v}" for v in VERDICTS if counts[v] or v != "error"]
    total = len(report.objects)
    text = f"{total} object{'s' if total != 1 else ''}: {', '.join(parts)}"
    if report.errors:
        count = len(report.errors)
        text += f"; {count} document{'s' if count != 1 else ''} could not be tested"
    return text + "\n"


# --- patch and yaml ------------------------------------------------------------------------------


def format_patches(objects: Sequence[ObjectReport]) -> str:
    """Each object's JSONPatch as mlgate returned it, after a ``# Kind ns/name`` line."""
    out = []
    for report in objects:
        out.append(f"# {report.title} ({report.manifest.location})\n")
        out.append(json.dumps(report.patch, indent=2) + "\n")
    return "".join(out)


def format_yaml(objects: Sequence[ObjectReport]) -> str:
    """The mutated manifests as one multi-document YAML stream; denied ones say so first."""
    documents = []
    for report in objects:
        comment = ""
        if report.verdict in ("denied", "error"):
            first = (report.denial or report.error).splitlines()[0]
            comment = f"# mlgate policy test: {report.verdict}: {first}\n"
        documents.append(comment + dump_yaml(report.mutated))
    return "---\n".join(documents)


# --- json --------------------------------------------------------------------------------------


def build_report_wire(report: RunReport) -> ReportWire:
    return {
        "objects": [build_object_wire(o) for o in report.objects],
        "errors": [
            {
                "source": e.location.source,
                "document": e.location.document,
                "item": e.location.item,
                "reason": e.reason,
            }
            for e in report.errors
        ],
        "summary": {**count_verdicts(report.objects), "invalid": len(report.errors)},
        "exitCode": report.exit_code,
    }


def build_object_wire(report: ObjectReport) -> ObjectWire:
    location = report.manifest.location
    return {
        "source": location.source,
        "document": location.document,
        "item": location.item,
        "kind": report.kind,
        "namespace": report.namespace,
        "name": report.name,
        "verdict": report.verdict,
        "allowed": report.verdict in ("allowed", "warned"),
        "denial": report.denial,
        "warnings": list(report.warnings),
        "results": [
            {
                "policy": r.policy,
                "rule": r.rule,
                "status": r.status,
                "action": r.action,
                "message": r.message,
                "path": r.path,
            }
            for r in report.results
        ],
        "mutatedBy": list(report.mutated_by),
        "patch": report.patch,
        "mutated": report.mutated,
        "notes": list(report.notes),
        "error": report.error,
    }
