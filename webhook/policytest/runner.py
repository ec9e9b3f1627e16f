"""Run manifests through the admission pipeline exactly as the API server would.

Each object is wrapped in the AdmissionReview v1 the API server sends for a CREATE, parsed with
``webhook.review.parse_review`` and decided by ``webhook.admission.Admitter``, the same objects
``mlgate serve`` uses: first ``/mutate``; the JSONPatch it answers is applied to the object with
``jsonpatch`` (as the API server applies it), and the mutated object goes to ``/validate``, as
the API server runs validating webhooks last, on the final object.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonpatch
import orjson

from mutators.diff import copy_json
from policies.loader import list_policy_files, load_policy_dir, load_policy_texts
from policies.model import PolicySet
from policies.results import CheckResult
from webhook.admission import Admitter, ClusterLookups, Outcome, Webhook
from webhook.policytest.manifests import Location, Manifest, ManifestError
from webhook.review import API_VERSION, KIND, AdmissionReviewWire, ReviewError, parse_review

JsonObject = dict[str, Any]
Verdict = Literal["allowed", "warned", "denied", "error"]

DEFAULT_NAMESPACE = "default"
DEFAULT_USER = "admin"
DEFAULT_GROUPS = ("system:masters", "system:authenticated")
# The options kubectl apply (client side) sends with a CREATE.
CREATE_OPTIONS = {
    "apiVersion": "meta.k8s.io/v1",
    "kind": "CreateOptions",
    "fieldManager": "kubectl-client-side-apply",
    "fieldValidation": "Strict",
}


@dataclass(frozen=True)
class FixedPolicies:
    """A policy set that never changes (``webhook.admission.PolicySource``)."""

    current: PolicySet


@dataclass(frozen=True)
class Requester:
    """Who sends the requests: ``request.userInfo``."""

    username: str = DEFAULT_USER
    groups: tuple[str, ...] = DEFAULT_GROUPS


@dataclass(frozen=True)
class RunOptions:
    """How objects are sent. ``namespace`` is for objects that name none; when
    ``namespace_given`` (``--namespace`` on the command line), an object naming another one is
    an error, as with ``kubectl apply``."""

    namespace: str = DEFAULT_NAMESPACE
    namespace_given: bool = False
    requester: Requester = Requester()


@dataclass(frozen=True)
class Exchange:
    """One call of a webhook: the body sent and the AdmissionReview answered."""

    webhook: Webhook
    body: bytes
    review: AdmissionReviewWire
    note: str = ""


@dataclass(frozen=True)
class ObjectReport:
    """What mlgate did to one object, as the API server would see it.

    ``verdict``: ``denied`` when ``/validate`` (or ``/mutate``) answered ``allowed: false``,
    ``warned`` when allowed with warnings, else ``allowed``; ``error`` when mlgate failed on
    the object (the webhooks' ``failurePolicy: Fail`` would reject it).
    """

    manifest: Manifest
    namespace: str
    verdict: Verdict
    original: JsonObject
    mutated: JsonObject
    patch: list[JsonObject] = field(default_factory=list)
    warnings: tuple[str, ...] = ()
    denial: str = ""
    results: tuple[CheckResult, ...] = ()
    mutated_by: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    exchanges: tuple[Exchange, ...] = ()
    error: str = ""

    @property
    def kind(self) -> str:
        return self.manifest.kind.kind

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def title(self) -> str:
        """``Deployment ml-production/recommendation-model``."""
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"

    @property
    def messages(self) -> list[str]:
        """Every message a person would read: the denial's lines, warnings, every failing or
        skipped rule, notes."""
        # The denial's headline; its other lines are the deny results, listed below.
        lines = self.denial.splitlines()[:1] + list(self.warnings)
        # Every failing or skipped rule in full, with its id (warnings on the wire name only
        # the policy and may be shortened).
        lines += [
            f"[{r.policy}/{r.rule}] {r.message}"
            for r in self.results
            if r.failed or r.status == "skip"
        ]
        lines += [*self.notes, *([self.error] if self.error else [])]
        return list(dict.fromkeys(lines))


@dataclass(frozen=True)
class RunReport:
    """Every object tested, and every document that could not be."""

    objects: tuple[ObjectReport, ...]
    errors: tuple[ManifestError, ...]

    @property
    def exit_code(self) -> int:
        """0: all allowed (warnings included); 1: something denied or failed; 2: bad input."""
        if self.errors:
            return 2
        return 1 if any(o.verdict in ("denied", "error") for o in self.objects) else 0


def build_groups(groups: Sequence[str] | None, *, user_given: bool) -> tuple[str, ...]:
    """The groups of the requests: as given, plus ``system:authenticated`` as the API server
    adds it; the default user is in ``system:masters``."""
    if groups is None:
        return DEFAULT_GROUPS if not user_given else ("system:authenticated",)
    return tuple(dict.fromkeys([*groups, "system:authenticated"]))


def load_policies(paths: Sequence[Path]) -> PolicySet:
    """The policy set of folders and files, in the given order (``PolicyLoadError`` on errors).

    One folder loads with ``load_policy_dir``, exactly as the server loads its folder.
    """
    if len(paths) == 1 and paths[0].is_dir():
        return load_policy_dir(paths[0])
    texts: list[tuple[str, str]] = []
    for path in paths:
        files = list_policy_files(path) if path.is_dir() else [path]
        texts += [(str(f), f.read_text(encoding="utf-8", errors="replace")) for f in files]
    return load_policy_texts(texts)


def build_review(
    manifest: Manifest,
    obj: JsonObject,
    *,
    uid: str,
    namespace: str,
    requester: Requester,
) -> dict[str, Any]:
    """The AdmissionReview v1 the API server sends for a ``kubectl apply`` CREATE of ``obj``."""
    kind = manifest.kind
    gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
    gvr = {"group": kind.group, "version": kind.version, "resource": kind.resource}
    request: dict[str, Any] = {
        "uid": uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": str((obj.get("metadata") or {}).get("name") or ""),
        "operation": "CREATE",
        "userInfo": {"username": requester.username, "groups": list(requester.groups)},
        "object": obj,
        "oldObject": None,
        "dryRun": False,
        "options": dict(CREATE_OPTIONS),
    }
    if namespace:
        request["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": KIND, "request": request}


def stable_uid(location: Location) -> str:
    """The same uid for the same document on every run, so reports can be compared."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mlgate-policy-test:{location}"))


def resolve_namespace(manifest: Manifest, options: RunOptions) -> str | ManifestError:
    """The namespace the object is created in ("" for cluster-scoped kinds), or a conflict."""
    if not manifest.kind.namespaced:
        return ""
    own = manifest.namespace
    if own and options.namespace_given and own != options.namespace:
        return ManifestError(
            manifest.location,
            f"the object's namespace {own!r} does not match --namespace {options.namespace!r}",
        )
    return own or options.namespace


def run_manifests(
    manifests: Sequence[Manifest],
    *,
    policy_set: PolicySet,
    cluster: ClusterLookups | None = None,
    options: RunOptions = RunOptions(),
    clock: Callable[[], dt.datetime] | None = None,
) -> tuple[list[ObjectReport], list[ManifestError]]:
    """Every manifest through one ``Admitter``, as ``mlgate serve`` would decide it."""
    admitter = Admitter(
        policies=FixedPolicies(policy_set),
        cluster=cluster,
        clock=clock or (lambda: dt.datetime.now(dt.UTC)),
    )
    reports: list[ObjectReport] = []
    errors: list[ManifestError] = []
    for manifest in manifests:
        namespace = resolve_namespace(manifest, options)
        if isinstance(namespace, ManifestError):
            errors.append(namespace)
            continue
        reports.append(
            run_object(admitter, manifest, namespace=namespace, requester=options.requester)
        )
    return reports, errors


def run_object(
    admitter: Admitter, manifest: Manifest, *, namespace: str, requester: Requester
) -> ObjectReport:
    """``/mutate``, the patch applied, then ``/validate`` on the mutated object."""
    original: JsonObject = copy_json(manifest.obj)
    if namespace:
        original.setdefault("metadata", {})["namespace"] = namespace
    uid = stable_uid(manifest.location)
    base = ObjectReport(
        manifest=manifest,
        namespace=namespace,
        verdict="allowed",
        original=original,
        mutated=original,
    )

    def call(webhook: Webhook, obj: JsonObject) -> tuple[Exchange, Outcome]:
        body = orjson.dumps(
            build_review(manifest, obj, uid=uid, namespace=namespace, requester=requester)
        )
        outcome = admitter.admit(webhook, parse_review(body))
        return Exchange(webhook, body, outcome.review, outcome.note), outcome

    try:
        mutate, mutate_outcome = call("mutate", original)
        response = mutate.review["response"]
        patch: list[JsonObject] = []
        if "patch" in response:
            patch = orjson.loads(base64.b64decode(response["patch"]))
        mutated: JsonObject = jsonpatch.apply_patch(original, patch) if patch else original
        if not response["allowed"]:
            return _decided(base, (mutate,), mutated=mutated, patch=patch)
        validate, validate_outcome = call("validate", mutated)
    except (ReviewError, jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        return _failed(base, f"mlgate could not handle the object: {exc}")
    except Exception as exc:  # NOTE: the server answers 500 here; failurePolicy Fail rejects
        return _failed(base, f"mlgate failed on the object: {type(exc).__name__}: {exc}")
    return _decided(
        base,
        (mutate, validate),
        mutated=mutated,
        patch=patch,
        results=validate_outcome.results,
        mutated_by=mutate_outcome.policies,
    )


def _decided(
    base: ObjectReport,
    exchanges: tuple[Exchange, ...],
    *,
    mutated: JsonObject,
    patch: list[JsonObject],
    results: tuple[CheckResult, ...] = (),
    mutated_by: tuple[str, ...] = (),
) -> ObjectReport:
    warnings: list[str] = []
    denial = ""
    allowed = True
    for exchange in exchanges:
        response = exchange.review["response"]
        warnings += response.get("warnings", [])
        if not response["allowed"]:
            allowed = False
            denial = response.get("status", {}).get("message", "") or f"{exchange.webhook} denied"
    # The same note from both webhooks ("kind Namespace carries no pod spec") is shown once.
    by_note: dict[str, list[str]] = {}
    for exchange in exchanges:
        if exchange.note:
            by_note.setdefault(exchange.note, []).append(exchange.webhook)
    notes = tuple(f"{', '.join(hooks)}: {note}" for note, hooks in by_note.items())
    verdict: Verdict = "denied" if not allowed else "warned" if warnings else "allowed"
    return ObjectReport(
        manifest=base.manifest,
        namespace=base.namespace,
        verdict=verdict,
        original=base.original,
        mutated=mutated,
        patch=patch,
        warnings=tuple(warnings),
        denial=denial,
        results=results,
        mutated_by=mutated_by,
        notes=notes,
        exchanges=exchanges,
    )


def _failed(base: ObjectReport, message: str) -> ObjectReport:
    return ObjectReport(
        manifest=base.manifest,
        namespace=base.namespace,
        verdict="error",
        original=base.original,
        mutated=base.original,
        error=message,
    )
