"""AdmissionReview v1 on the wire: parse and check a request, build a response.

Only this module knows the wire format. A body that is not a usable AdmissionReview raises
``ReviewError`` with the HTTP status and a reason a person can act on; everything past that
works on ``AdmissionRequest``.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Literal, NamedTuple, NotRequired, TypedDict

import orjson

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
# kubectl shows each warning on one line; the API server may truncate those over 256 characters
# and asks webhooks to stay near 120 (k8s.io/apiserver admission webhook warnings).
MAX_WARNING_LENGTH = 256
MAX_WARNINGS = 32

JsonObject = dict[str, Any]


# --- the wire format --------------------------------------------------------------------------


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class UserInfoWire(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class AdmissionRequestWire(TypedDict):
    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    subResource: NotRequired[str]
    requestKind: NotRequired[GroupVersionKind]
    requestResource: NotRequired[GroupVersionResource]
    requestSubResource: NotRequired[str]
    name: NotRequired[str]
    namespace: NotRequired[str]
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    userInfo: UserInfoWire
    object: NotRequired[JsonObject | None]
    oldObject: NotRequired[JsonObject | None]
    dryRun: NotRequired[bool]
    options: NotRequired[JsonObject | None]


class StatusWire(TypedDict):
    code: int
    message: str
    reason: NotRequired[str]


class AdmissionResponseWire(TypedDict):
    uid: str
    allowed: bool
    patchType: NotRequired[Literal["JSONPatch"]]
    patch: NotRequired[str]
    status: NotRequired[StatusWire]
    warnings: NotRequired[list[str]]
    auditAnnotations: NotRequired[dict[str, str]]


class AdmissionReviewWire(TypedDict):
    apiVersion: str
    kind: str
    response: AdmissionResponseWire


# --- parsing ----------------------------------------------------------------------------------


class ReviewError(Exception):
    """The body is not a usable AdmissionReview; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str, *, uid: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.uid = uid


class AdmissionRequest(NamedTuple):
    """The parts of ``request`` that decisions use, checked and typed.

    A NamedTuple, as ``policies.workload.Workload``: one is made for every request, and a frozen
    dataclass's ``__init__`` sets each of the fifteen fields through ``object.__setattr__``.
    """

    uid: str
    operation: str
    group: str
    version: str
    kind: str
    resource_group: str
    resource: str
    sub_resource: str
    namespace: str
    name: str
    username: str
    groups: tuple[str, ...]
    obj: JsonObject | None
    old_obj: JsonObject | None
    dry_run: bool


def parse_review(body: bytes) -> AdmissionRequest:
    """Parse an AdmissionReview v1 body, or raise ``ReviewError`` naming what is wrong."""
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ReviewError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(review, dict):
        raise ReviewError(422, f"expected a JSON object (an AdmissionReview), got {_type(review)}")
    api_version, kind = review.get("apiVersion"), review.get("kind")
    if kind != KIND or api_version != API_VERSION:
        raise ReviewError(
            422,
            f"expected apiVersion {API_VERSION!r} and kind {KIND!r}, got apiVersion "
            f"{api_version!r} and kind {kind!r} (list v1 in the webhook's "
            "admissionReviewVersions)",
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise ReviewError(422, "request is missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError(422, "request.uid is missing or not a non-empty string")
    return _parse_request(request, uid)


def _parse_request(request: JsonObject, uid: str) -> AdmissionRequest:
    operation = request.get("operation")
    if operation not in OPERATIONS:
        raise _invalid(
            uid, f"request.operation must be one of {', '.join(OPERATIONS)}, got {operation!r}"
        )
    gvk, gvr = request.get("kind"), request.get("resource")
    group, version, kind = _strings(uid, gvk, "request.kind", "group", "version", "kind")
    resource_group, _, resource = _strings(
        uid, gvr, "request.resource", "group", "version", "resource"
    )
    user = request.get("userInfo")
    if user is None:
        user = {}
    if not isinstance(user, dict):
        raise _invalid(uid, "request.userInfo must be an object")
    groups = user.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise _invalid(uid, "request.userInfo.groups must be a list of strings")
    obj, old_obj = request.get("object"), request.get("oldObject")
    if obj is not None and not isinstance(obj, dict):
        raise _invalid(uid, f"request.object must be an object or null, got {_type(obj)}")
    if old_obj is not None and not isinstance(old_obj, dict):
        raise _invalid(uid, f"request.oldObject must be an object or null, got {_type(old_obj)}")
    if obj is None and operation in ("CREATE", "UPDATE"):
        raise _invalid(uid, f"request.object is required for {operation}")
    dry_run = request.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise _invalid(uid, "request.dryRun must be true or false")
    sub_resource = _optional_string(uid, request, "subResource")
    namespace = _optional_string(uid, request, "namespace")
    name = _optional_string(uid, request, "name")
    username = _optional_string(uid, user, "username", where="request.userInfo")
    return AdmissionRequest(
        uid,
        operation,
        group,
        version,
        kind,
        resource_group,
        resource,
        sub_resource,
        namespace,
        name or _object_name(obj or old_obj),
        username,
        tuple(groups),
        obj,
        old_obj,
        dry_run,
    )


def _invalid(uid: str, reason: str) -> ReviewError:
    return ReviewError(422, reason, uid=uid)


def _strings(uid: str, value: Any, where: str, *fields: str) -> list[str]:
    """The string ``fields`` of the object ``value``, in order; only ``group`` may be empty."""
    if not isinstance(value, dict):
        raise _invalid(uid, f"{where} is missing or not an object")
    out = []
    for field in fields:
        text = value.get(field, "")
        if not isinstance(text, str) or (not text and field != "group"):
            raise _invalid(uid, f"{where}.{field} must be a non-empty string")
        out.append(text)
    return out


def _optional_string(uid: str, parent: JsonObject, field: str, *, where: str = "request") -> str:
    value = parent.get(field) or ""
    if not isinstance(value, str):
        raise _invalid(uid, f"{where}.{field} must be a string")
    return value


def _object_name(obj: JsonObject | None) -> str:
    metadata = obj.get("metadata") if obj else None
    if isinstance(metadata, dict):
        name = metadata.get("name") or metadata.get("generateName") or ""
        return name if isinstance(name, str) else ""
    return ""


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else "null"
    )


# --- responses --------------------------------------------------------------------------------


def build_response(
    uid: str,
    *,
    allowed: bool = True,
    patch: list[JsonObject] | None = None,
    message: str = "",
    warnings: list[str] | tuple[str, ...] = (),
    audit_annotations: dict[str, str] | None = None,
) -> AdmissionReviewWire:
    """The AdmissionReview to answer with; a denial carries ``status`` 403 and ``message``."""
    response: AdmissionResponseWire = {"uid": uid, "allowed": allowed}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(patch)).decode("ascii")
    if not allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": message}
    if warnings:
        response["warnings"] = format_warnings(warnings)
    if audit_annotations:
        response["auditAnnotations"] = audit_annotations
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def format_warnings(warnings: list[str] | tuple[str, ...]) -> list[str]:
    """Warnings as kubectl shows them: one line each, at most 256 characters, deduplicated."""
    out: list[str] = []
    for warning in warnings:
        text = _CONTROL.sub(" ", warning).strip()
        if len(text) > MAX_WARNING_LENGTH:
            text = text[: MAX_WARNING_LENGTH - 3].rstrip() + "..."
        if text and text not in out:
            out.append(text)
    if len(out) > MAX_WARNINGS:
        hidden = len(out) - MAX_WARNINGS + 1
        out = [*out[: MAX_WARNINGS - 1], f"... and {hidden} more warnings from mlgate"]
    return out
