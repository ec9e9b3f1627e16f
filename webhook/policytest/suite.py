"""Policy test suites: manifests with their expected verdicts, messages and mutated objects.

A suite file holds one or more ``PolicyTestSuite`` documents (paths are relative to the file)::

    apiVersion: mlgate.io/v1alpha1
    kind: PolicyTestSuite
    metadata:
      name: default-policies
    spec:
      policies: [../defaults]            # folders or files; default: the shipped defaults
      manifests: [../examples]           # files or folders, read as `kubectl apply -f` does
      namespace: default                 # for objects that name none
      user: admin                        # request.userInfo (groups: default as on the CLI)
      groups: [system:masters]
      namespaceLabels: {ml-prod: {tier: gold}}   # offline cluster (see cluster.py)
      resourceQuotas: [quotas.yaml]              # ResourceQuota objects with status.used
      now: "2026-12-01T00:00:00Z"        # the clock of exemption expiry (default: now)
      cases:
        - object: Deployment/ml-production/recommendation-model   # Kind/[namespace/]name
          verdict: denied                # allowed | warned | denied | error
          messages: ["images.no-latest"] # substrings, each found in some message
          absentMessages: ["labels."]    # substrings found in no message
          changed: true                  # whether /mutate patched the object
          mutated: {spec: {replicas: 3}} # a subset of the mutated object
          mutatedFile: expected/x.yaml   # the whole mutated object, exactly

Every object of the manifests needs a case, so that a new example cannot slip in untested; a
case that names no object fails, as does a document that cannot be read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from policies.loader import PolicyLoadError, default_policy_dir
from webhook.policytest.cluster import OfflineCluster, collect_quotas
from webhook.policytest.manifests import read_manifests
from webhook.policytest.runner import (
    DEFAULT_NAMESPACE,
    DEFAULT_USER,
    ObjectReport,
    Requester,
    RunOptions,
    build_groups,
    load_policies,
    run_manifests,
)

SUITE_KIND = "PolicyTestSuite"
SUITE_API_VERSION = "mlgate.io/v1alpha1"
VERDICT_VALUES = ("allowed", "warned", "denied", "error")
SPEC_FIELDS = frozenset(
    {
        "policies",
        "manifests",
        "namespace",
        "user",
        "groups",
        "namespaceLabels",
        "resourceQuotas",
        "now",
        "cases",
    }
)
CASE_FIELDS = frozenset(
    {"object", "verdict", "messages", "absentMessages", "changed", "mutated", "mutatedFile"}
)


class SuiteError(Exception):
    """A suite file that cannot be run: ``file: where: what``."""


@dataclass(frozen=True)
class Case:
    """What one object is expected to get."""

    object: str  # Kind/name or Kind/namespace/name
    verdict: str
    messages: tuple[str, ...] = ()
    absent_messages: tuple[str, ...] = ()
    changed: bool | None = None
    mutated: Any = None  # a subset of the mutated object
    mutated_file: Path | None = None


@dataclass(frozen=True)
class Suite:
    name: str
    file: Path
    policies: tuple[Path, ...]
    manifests: tuple[Path, ...]
    cases: tuple[Case, ...]
    namespace: str = DEFAULT_NAMESPACE
    requester: Requester = field(default_factory=Requester)
    namespace_labels: Mapping[str, Mapping[str, str]] | None = None
    resource_quotas: tuple[Path, ...] = ()
    now: dt.datetime | None = None


@dataclass(frozen=True)
class CaseResult:
    """One row of the table: an object, what was expected and got, and why it failed."""

    suite: str
    object: str
    expected: str
    got: str
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class SuiteRun:
    results: tuple[CaseResult, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)


# --- loading ------------------------------------------------------------------------------------


def load_suite_file(path: Path) -> list[Suite]:
    """Every suite of a file, or ``SuiteError`` naming the file and the problem."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{path}: cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML: {exc}") from None
    if not documents:
        raise SuiteError(f"{path}: holds no {SUITE_KIND}")
    return [parse_suite(doc, file=path, index=i) for i, doc in enumerate(documents, start=1)]


def parse_suite(doc: Any, *, file: Path, index: int) -> Suite:
    """One ``PolicyTestSuite`` document; paths resolved against the file's folder."""

    def fail(where: str, message: str) -> SuiteError:
        return SuiteError(f"{file}: document {index}: {where}: {message}")

    if not isinstance(doc, dict) or doc.get("kind") != SUITE_KIND:
        raise fail("kind", f"expected kind {SUITE_KIND} (apiVersion {SUITE_API_VERSION})")
    name = str((doc.get("metadata") or {}).get("name") or f"{file.stem}#{index}")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise fail("spec", "missing or not a mapping")
    unknown = sorted(set(spec) - SPEC_FIELDS)
    if unknown:
        raise fail(
            "spec", f"unknown field {unknown[0]!r} (known: {', '.join(sorted(SPEC_FIELDS))})"
        )
    base = file.parent

    def paths(key: str, *, required: bool) -> tuple[Path, ...]:
        value = spec.get(key)
        if value is None and not required:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise fail(f"spec.{key}", "expected a path or a list of paths")
        return tuple(base / v for v in value)

    policies = paths("policies", required=False) or (default_policy_dir(),)
    labels = spec.get("namespaceLabels")
    if labels is not None and not (
        isinstance(labels, dict) and all(isinstance(v, dict) or v is None for v in labels.values())
    ):
        raise fail("spec.namespaceLabels", "expected {namespace: {key: value}}")
    groups = spec.get("groups")
    if groups is not None and not (
        isinstance(groups, list) and all(isinstance(g, str) for g in groups)
    ):
        raise fail("spec.groups", "expected a list of group names")
    user = spec.get("user")
    requester = Requester(
        username=str(user or DEFAULT_USER),
        groups=build_groups(groups, user_given=user is not None),
    )
    cases = spec.get("cases")
    if not isinstance(cases, list) or not cases:
        raise fail("spec.cases", "expected a non-empty list of cases")
    return Suite(
        name=name,
        file=file,
        policies=policies,
        manifests=paths("manifests", required=True),
        cases=tuple(
            parse_case(c, base=base, fail=_case_failure(fail, index=i)) for i, c in enumerate(cases)
        ),
        namespace=str(spec.get("namespace") or DEFAULT_NAMESPACE),
        requester=requester,
        namespace_labels=(
            {str(ns): {str(k): str(v) for k, v in (ls or {}).items()} for ns, ls in labels.items()}
            if labels is not None
            else None
        ),
        resource_quotas=paths("resourceQuotas", required=False),
        now=parse_time(spec.get("now"), fail=lambda m: fail("spec.now", m)),
    )


def _case_failure(
    fail: Callable[[str, str], SuiteError], *, index: int
) -> Callable[[str, str], SuiteError]:
    def fail_case(where: str, message: str) -> SuiteError:
        return fail(f"spec.cases[{index}]" + (f".{where}" if where else ""), message)

    return fail_case


def parse_time(value: Any, *, fail: Callable[[str], SuiteError]) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime.combine(value, dt.time())
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise fail(f"{value!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def parse_case(data: Any, *, base: Path, fail: Callable[[str, str], SuiteError]) -> Case:
    if not isinstance(data, dict):
        raise fail("", "expected a mapping")
    unknown = sorted(set(data) - CASE_FIELDS)
    if unknown:
        raise fail(unknown[0], f"unknown field (known: {', '.join(sorted(CASE_FIELDS))})")
    obj = data.get("object")
    if not isinstance(obj, str) or obj.count("/") not in (1, 2):
        raise fail("object", "expected Kind/name or Kind/namespace/name")
    verdict = data.get("verdict")
    if verdict not in VERDICT_VALUES:
        raise fail("verdict", f"expected one of {', '.join(VERDICT_VALUES)}")

    def texts(key: str) -> tuple[str, ...]:
        value = data.get(key) or []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(key, "expected a list of strings")
        return tuple(value)

    changed = data.get("changed")
    if changed is not None and not isinstance(changed, bool):
        raise fail("changed", "expected true or false")
    mutated_file = data.get("mutatedFile")
    if mutated_file is not None and not isinstance(mutated_file, str):
        raise fail("mutatedFile", "expected a path")
    return Case(
        object=obj,
        verdict=verdict,
        messages=texts("messages"),
        absent_messages=texts("absentMessages"),
        changed=changed,
        mutated=data.get("mutated"),
        mutated_file=base / mutated_file if mutated_file else None,
    )


# --- running ------------------------------------------------------------------------------------


def run_suite(suite: Suite) -> SuiteRun:
    """Every case of ``suite`` checked against what the pipeline does to its manifests."""
    try:
        policy_set = load_policies(list(suite.policies))
    except (PolicyLoadError, OSError) as exc:
        raise SuiteError(f"{suite.file}: suite {suite.name}: policies: {exc}") from None
    manifest_set = read_manifests(list(suite.manifests))
    rows: list[CaseResult] = [
        CaseResult(suite.name, str(e.location), "-", "invalid", (e.reason,))
        for e in manifest_set.errors
    ]
    cluster = None
    if suite.namespace_labels is not None or suite.resource_quotas:
        quota_set = read_manifests(list(suite.resource_quotas))
        quotas, quota_errors = collect_quotas(
            quota_set.manifests, default_namespace=suite.namespace
        )
        for error in (*quota_set.errors, *quota_errors):
            rows.append(
                CaseResult(suite.name, str(error.location), "-", "invalid", (error.reason,))
            )
        cluster = OfflineCluster(labels=dict(suite.namespace_labels or {}), quotas=quotas)
    now = suite.now
    reports, errors = run_manifests(
        manifest_set.manifests,
        policy_set=policy_set,
        cluster=cluster,
        options=RunOptions(namespace=suite.namespace, requester=suite.requester),
        clock=(lambda: now) if now is not None else None,
    )
    rows += [CaseResult(suite.name, str(e.location), "-", "invalid", (e.reason,)) for e in errors]
    covered: set[int] = set()
    for case in suite.cases:
        found = find_reports(reports, case.object)
        if len(found) != 1:
            why = (
                f"no object {case.object} in the manifests"
                if not found
                else f"{case.object} names {len(found)} objects; add the namespace "
                "(Kind/namespace/name)"
            )
            rows.append(CaseResult(suite.name, case.object, case.verdict, "-", (why,)))
            continue
        index = reports.index(found[0])
        covered.add(index)
        rows.append(
            CaseResult(
                suite.name,
                found[0].title,
                case.verdict,
                found[0].verdict,
                tuple(check_case(case, found[0])),
            )
        )
    for index, report in enumerate(reports):
        if index not in covered:
            rows.append(
                CaseResult(
                    suite.name,
                    report.title,
                    "-",
                    report.verdict,
                    (f"no case for this object ({report.manifest.location}); add one",),
                )
            )
    return SuiteRun(tuple(rows))


def find_reports(reports: Sequence[ObjectReport], ref: str) -> list[ObjectReport]:
    """The reports ``Kind/name`` or ``Kind/namespace/name`` names."""
    parts = ref.split("/")
    kind, name = parts[0], parts[-1]
    namespace = parts[1] if len(parts) == 3 else None
    return [
        r
        for r in reports
        if r.kind == kind and r.name == name and (namespace is None or r.namespace == namespace)
    ]


def check_case(case: Case, report: ObjectReport) -> list[str]:
    """Every way ``report`` differs from what ``case`` expects (empty: the case passes)."""
    failures: list[str] = []
    if report.verdict != case.verdict:
        detail = report.denial or report.error or "; ".join(report.warnings)
        failures.append(
            f"expected {case.verdict}, got {report.verdict}" + (f": {detail}" if detail else "")
        )
    messages = report.messages
    for text in case.messages:
        if not any(text in m for m in messages):
            shown = "\n    ".join(messages) or "(none)"
            failures.append(f"no message contains {text!r}; the messages are:\n    {shown}")
    for text in case.absent_messages:
        hits = [m for m in messages if text in m]
        if hits:
            failures.append(f"a message contains {text!r}: {hits[0]}")
    if case.changed is not None and bool(report.patch) != case.changed:
        failures.append(
            "expected a patch, got none"
            if case.changed
            else f"expected no patch, got {len(report.patch)} operations"
        )
    if case.mutated is not None:
        failures += [f"mutated object: {d}" for d in find_differences(case.mutated, report.mutated)]
    if case.mutated_file is not None:
        failures += check_mutated_file(case.mutated_file, report)
    return failures


def check_mutated_file(path: Path, report: ObjectReport) -> list[str]:
    try:
        expected = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return [f"mutatedFile {path}: {exc}"]
    differences = find_differences(expected, report.mutated) + [
        f"{p}: not expected, got {v!r}" for p, v in find_extra(expected, report.mutated)
    ]
    return [f"mutatedFile {path.name}: {d}" for d in differences]


def find_differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``actual`` does not contain ``expected``: mappings may hold more keys, lists must
    have the same length with each item containing the expected item, scalars be equal."""
    where = path or "(root)"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected a mapping, got {actual!r}"]
        out: list[str] = []
        for key, value in expected.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in actual:
                out.append(f"{sub}: missing (expected {value!r})")
            else:
                out += find_differences(value, actual[key], sub)
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected {expected!r}, got {actual!r}"]
        out = []
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            out += find_differences(want, got, f"{path}[{index}]")
        return out
    if expected != actual or isinstance(expected, bool) != isinstance(actual, bool):
        return [f"{where}: expected {expected!r}, got {actual!r}"]
    return []


def find_extra(expected: Any, actual: Any, path: str = "") -> list[tuple[str, Any]]:
    """Keys of ``actual`` that ``expected`` lacks (for exact comparison with a file)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[tuple[str, Any]] = []
        for key, value in actual.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in expected:
                out.append((sub, value))
            else:
                out += find_extra(expected[key], value, sub)
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            extra
            for index, (want, got) in enumerate(zip(expected, actual, strict=True))
            for extra in find_extra(want, got, f"{path}[{index}]")
        ]
    return []


# --- the table ----------------------------------------------------------------------------------


def format_table(results: Sequence[CaseResult]) -> str:
    """A pass/fail table, then each failure in full, then the count."""
    header = ("SUITE", "OBJECT", "EXPECTED", "GOT", "RESULT")
    rows = [(r.suite, r.object, r.expected, r.got, "PASS" if r.passed else "FAIL") for r in results]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    failed = [r for r in results if not r.passed]
    for result in failed:
        lines.append("")
        lines.append(f"FAIL {result.suite}: {result.object}")
        lines += [f"  - {f}" for f in result.failures]
    lines.append("")
    lines.append(
        f"{len(results)} case{'s' if len(results) != 1 else ''}: "
        f"{len(results) - len(failed)} passed, {len(failed)} failed"
    )
    return "\n".join(lines) + "\n"
