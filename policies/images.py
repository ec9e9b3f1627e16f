"""The images check: allowed repositories, no ``:latest``, digests, tag vs version label.

Rules (ids): ``images.allowed-repositories``, ``images.no-latest``, ``images.require-digest``
(only in namespaces matching ``require_digest_namespaces``) and ``images.tag-matches-version``.
Every container counts: init, app and ephemeral. Results are one ``fail`` per offending
container, or one ``pass`` per rule when none offends.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from policies.actions import resolve_action, resolve_actions
from policies.context import AdmissionContext
from policies.globs import compile_fnmatch
from policies.model import Action, ImageSettings, Policy
from policies.results import CheckResult
from policies.workload import ContainerRef, Workload, format_path

JsonObject = dict[str, Any]

DEFAULT_REGISTRY = "docker.io"
VERSION_LABELS = ("version", "app.kubernetes.io/version")
RULES = (
    "images.allowed-repositories",
    "images.no-latest",
    "images.require-digest",
    "images.tag-matches-version",
)


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference: ``registry/repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """The normalised name without tag or digest: ``docker.io/library/nginx``."""
        return f"{self.registry}/{self.repository}"

    @property
    def familiar_name(self) -> str:
        """The name as people write it: ``nginx``, ``proptechusa/model``, ``ghcr.io/x/y``."""
        if self.registry != DEFAULT_REGISTRY:
            return self.name
        return self.repository.removeprefix("library/")


@functools.lru_cache(maxsize=4096)
def parse_image(image: str) -> ImageRef:
    """Split an image reference the way the container runtime does (docker/distribution).

    Remembered: a cluster runs the same few images, and every request parses each of its own.
    """
    rest, _, digest = image.partition("@")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = DEFAULT_REGISTRY, rest
    if registry == "index.docker.io":
        registry = DEFAULT_REGISTRY
    last_slash = path.rfind("/")
    colon = path.rfind(":")
    tag: str | None = None
    if colon > last_slash:
        path, tag = path[:colon], path[colon + 1 :]
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    return ImageRef(registry=registry, repository=path, tag=tag or None, digest=digest or None)


def check_images(
    ctx: AdmissionContext, subject: Workload, *, policy: Policy, settings: ImageSettings
) -> list[CheckResult]:
    """Every image rule of ``settings`` on every container of the request's object."""
    workload = subject.description
    actions = resolve_actions(policy, RULES, settings.action)
    if not subject.templates:
        return [
            CheckResult(
                policy=policy.name,
                rule=rule,
                status="skip",
                message=f"{workload} carries no pod spec",
                action=actions[rule],
            )
            for rule in RULES
        ]
    version = _version_label(subject.labels)  # once, not per container
    images = [
        (ref, image, parse_image(image))
        for ref in subject.containers
        if isinstance(image := ref.container.get("image"), str)
    ]

    results: list[CheckResult] = []
    if settings.allowed_repositories:
        allowed = ", ".join(settings.allowed_repositories)
        failures = [
            (
                _image_path(ref),
                f"{ref.describe()} of {workload} uses {image} (repository {parsed.name}), "
                f"which is not in the allowed repositories: {allowed}; "
                "use an image from one of them",
            )
            for ref, image, parsed in images
            if not is_allowed_repository(parsed, settings.allowed_repositories)
        ]
        results += _rule_results(
            policy,
            "images.allowed-repositories",
            failures,
            action=actions["images.allowed-repositories"],
            ok=f"every image of {workload} comes from an allowed repository",
        )
    if settings.disallow_latest:
        failures = [
            (_image_path(ref), f"{ref.describe()} of {workload} {problem}")
            for ref, image, parsed in images
            if (problem := _latest_problem(image, parsed, version)) is not None
        ]
        results += _rule_results(
            policy,
            "images.no-latest",
            failures,
            action=actions["images.no-latest"],
            ok=f"every image of {workload} is pinned to a tag other than latest or a digest",
        )
    digest_namespaces = settings.require_digest_namespaces
    if digest_namespaces and compile_fnmatch(digest_namespaces).matches(ctx.namespace):
        failures = [
            (
                _image_path(ref),
                f"{ref.describe()} of {workload} uses {image}, but namespace {ctx.namespace} "
                f"requires images pinned by digest; use {parsed.familiar_name}@sha256:<digest>",
            )
            for ref, image, parsed in images
            if parsed.digest is None or not parsed.digest.startswith("sha256:")
        ]
        results += _rule_results(
            policy,
            "images.require-digest",
            failures,
            action=actions["images.require-digest"],
            ok=f"every image of {workload} is pinned by digest",
        )
    if settings.tag_matches_version is not None:
        results.append(
            _check_tag_matches_version(
                version,
                images,
                policy=policy,
                action=resolve_action(
                    policy, "images.tag-matches-version", settings.tag_matches_version
                ),
                workload=workload,
            )
        )
    return results


def _rule_results(
    policy: Policy, rule: str, failures: list[tuple[str, str]], *, action: Action, ok: str
) -> list[CheckResult]:
    """One ``fail`` per (path, message) in ``failures``, or one ``pass`` saying ``ok``."""
    if not failures:
        return [CheckResult(policy.name, rule, "pass", ok, action=action)]
    return [
        CheckResult(policy.name, rule, "fail", message, action=action, path=path)
        for path, message in failures
    ]


def is_allowed_repository(image: ImageRef, patterns: tuple[str, ...]) -> bool:
    """Whether the image's normalised or familiar name matches one of the globs."""
    globs = compile_fnmatch(patterns)
    return globs.matches(image.name) or globs.matches(image.familiar_name)


def _latest_problem(image: str, parsed: ImageRef, version: str | None) -> str | None:
    if parsed.tag == "latest":
        return f"uses {image}; the tag latest moves under running pods, so {_pin(parsed, version)}"
    if parsed.tag is None and parsed.digest is None:
        return f"uses {image} with no tag, which means :latest; {_pin(parsed, version)}"
    return None


def _pin(parsed: ImageRef, version: str | None) -> str:
    example = f":{version}" if version else ":v1.2.3"
    return f"pin a version tag such as {parsed.familiar_name}{example} or a digest (@sha256:...)"


def _check_tag_matches_version(
    version: str | None,
    images: list[tuple[ContainerRef, str, ImageRef]],
    *,
    policy: Policy,
    action: Action,
    workload: str,
) -> CheckResult:
    rule = "images.tag-matches-version"
    # NOTE: only app containers carry the model: init containers and sidecars (fetchers,
    # proxies) have versions of their own. The rule holds when one app container's tag equals
    # the version label.
    tagged = [(ref, p) for ref, _, p in images if ref.list_name == "containers" and p.tag]
    if version is None or not tagged:
        missing = "no version label" if version is None else "no tagged app container"
        return CheckResult(policy.name, rule, "skip", f"{workload} has {missing}", action=action)
    if any(p.tag == version for _, p in tagged):
        return CheckResult(
            policy.name, rule, "pass", f"{workload} runs image tag {version}", action=action
        )
    found = ", ".join(f"{p.tag} ({ref.describe()})" for ref, p in tagged)
    return CheckResult(
        policy.name,
        rule,
        "fail",
        f"{workload} has label version={version} but its image tags are {found}; "
        f"tag the model image {version} or set the version label to the tag it runs",
        action=action,
        path=_image_path(tagged[0][0]),
    )


def _version_label(labels: dict[str, str]) -> str | None:
    for key in VERSION_LABELS:
        if labels.get(key):
            return labels[key]
    return None


def _image_path(ref: ContainerRef) -> str:
    return format_path((*ref.path, "image"))
