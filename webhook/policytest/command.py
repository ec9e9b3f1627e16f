"""``mlgate policy test``: manifests through the admission pipeline, or test suites.

Exit status: 0 every object allowed (warnings included) or every suite case passed; 1 an
object denied (or mlgate failed on it) or a case failed; 2 usage errors, policy files with
errors, documents that cannot be read (the others are still tested and shown).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any, TextIO

from policies.loader import PolicyLoadError, default_policy_dir
from webhook.policytest.cluster import (
    NamespaceLabelsError,
    OfflineCluster,
    collect_quotas,
    parse_namespace_labels,
)
from webhook.policytest.manifests import read_manifests
from webhook.policytest.report import OUTPUTS, render_report
from webhook.policytest.runner import (
    DEFAULT_NAMESPACE,
    Requester,
    RunOptions,
    RunReport,
    build_groups,
    load_policies,
    run_manifests,
)
from webhook.policytest.suite import (
    CaseResult,
    SuiteError,
    format_table,
    load_suite_file,
    run_suite,
)


def add_test_parser(commands: Any) -> None:
    """``mlgate policy test`` under the ``policy`` group's subparsers."""
    test = commands.add_parser(
        "test",
        help="run manifests through the policies offline, or run test suites",
        description="Send each object of the manifests through the same admission pipeline "
        "as the webhook (a CREATE by the given user: /mutate, then /validate on the mutated "
        "object) and print the verdict, every message and the diff of the mutation. With "
        "--suite, run test suites and print a pass/fail table. Exit status: 0 all allowed "
        "(or all cases passed), 1 something denied (or a case failed), 2 usage, policy or "
        "manifest errors.",
    )
    test.add_argument(
        "manifests",
        nargs="*",
        metavar="MANIFEST_OR_DIR",
        help="files, folders (recursively) or - for stdin: YAML, JSON, kind: List",
    )
    test.add_argument(
        "--policies",
        action="append",
        type=Path,
        metavar="DIR_OR_FILE",
        help="policy folder or file (repeatable; default: the shipped default policies)",
    )
    test.add_argument(
        "--suite", action="append", type=Path, metavar="FILE", help="a test suite file (repeatable)"
    )
    test.add_argument(
        "--namespace",
        help=f"namespace of objects that name none (default: {DEFAULT_NAMESPACE}); an object "
        "naming another one is an error, as with kubectl apply -n",
    )
    test.add_argument("--user", help="request.userInfo.username (default: admin)")
    test.add_argument(
        "--group",
        action="append",
        help="a group of the user (repeatable; default: system:masters); "
        "system:authenticated is always added",
    )
    test.add_argument(
        "--namespace-labels",
        action="append",
        default=[],
        metavar="NS=KEY=VALUE[,KEY=VALUE...]",
        help="labels of a namespace, for namespaceSelector (repeatable)",
    )
    test.add_argument(
        "--resource-quota",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="ResourceQuota objects with status.used, for the live quota check (repeatable)",
    )
    test.add_argument(
        "--now",
        help="the time decisions are made at, ISO 8601 (e.g. to try an exemption's expiry)",
    )
    test.add_argument("--output", "-o", choices=OUTPUTS, default="text")
    test.set_defaults(func=run_policy_test)


def run_policy_test(
    args: argparse.Namespace,
    *,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    stdout, stderr = out or sys.stdout, err or sys.stderr
    if args.suite:
        if args.manifests:
            stderr.write("mlgate policy test: give manifests or --suite, not both\n")
            return 2
        return run_suites(args.suite, out=stdout, err=stderr)
    if not args.manifests:
        stderr.write("mlgate policy test: give manifests (files, folders or -) or --suite\n")
        return 2
    try:
        labels = parse_namespace_labels(args.namespace_labels)
        now = parse_now(args.now)
    except (NamespaceLabelsError, ValueError) as exc:
        stderr.write(f"mlgate policy test: {exc}\n")
        return 2
    policy_paths = args.policies or [default_policy_dir()]
    try:
        policy_set = load_policies(policy_paths)
    except PolicyLoadError as exc:
        stderr.write("".join(f"{e}\n" for e in exc.errors))
        stderr.write(f"mlgate policy test: the policy files have {len(exc.errors)} error(s)\n")
        return 2
    except OSError as exc:
        stderr.write(f"mlgate policy test: cannot read the policies: {exc}\n")
        return 2
    namespace = args.namespace or DEFAULT_NAMESPACE
    manifest_set = read_manifests(args.manifests, stdin=stdin or sys.stdin)
    errors = list(manifest_set.errors)
    cluster = None
    if labels or args.resource_quota:
        quota_set = read_manifests(args.resource_quota)
        quotas, quota_errors = collect_quotas(quota_set.manifests, default_namespace=namespace)
        if quota_set.errors or quota_errors:
            for error in (*quota_set.errors, *quota_errors):
                stderr.write(f"ERROR --resource-quota {error}\n")
            return 2
        cluster = OfflineCluster(labels=labels, quotas=quotas)
    options = RunOptions(
        namespace=namespace,
        namespace_given=args.namespace is not None,
        requester=Requester(
            username=args.user or "admin",
            groups=build_groups(args.group, user_given=args.user is not None),
        ),
    )
    reports, run_errors = run_manifests(
        manifest_set.manifests,
        policy_set=policy_set,
        cluster=cluster,
        options=options,
        clock=(lambda: now) if now is not None else None,
    )
    report = RunReport(objects=tuple(reports), errors=tuple(errors + run_errors))
    text, diagnostics = render_report(report, args.output)
    stdout.write(text)
    stderr.write(diagnostics)
    return report.exit_code


def parse_now(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--now {value!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def run_suites(files: list[Path], *, out: TextIO, err: TextIO) -> int:
    """Every suite of ``files``: the table on ``out``; 1 on a failed case, 2 on a bad suite."""
    results: list[CaseResult] = []
    try:
        for file in files:
            for suite in load_suite_file(file):
                results += run_suite(suite).results
    except SuiteError as exc:
        err.write(f"mlgate policy test: {exc}\n")
        return 2
    out.write(format_table(results))
    return 0 if all(r.passed for r in results) else 1
