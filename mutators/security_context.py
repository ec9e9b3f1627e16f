"""Non-root security contexts, with writable emptyDirs where the root filesystem goes read-only.

Pod: ``runAsNonRoot``, ``runAsUser``, ``runAsGroup``, ``fsGroup``, ``seccompProfile``. Each
container (init containers too): ``allowPrivilegeEscalation``, ``readOnlyRootFilesystem``,
``capabilities.drop``. Missing fields are filled in; an author's value is kept unless
``override``, and one that weakens the policy (``runAsUser: 0``, ``privileged: true``...) is
reported as a warning.

Some fields are left out where setting them would break the workload or get it rejected:

- ``runAsNonRoot: true`` is not added to a pod that explicitly runs a container as root
  (the kubelet would refuse to start it);
- ``allowPrivilegeEscalation: false`` is not added to a privileged container or one that adds
  ``SYS_ADMIN`` (the API server rejects both combinations);
- Windows pods (``spec.os.name: windows``) are left alone: the API server forbids these Linux
  fields on them.

A container whose root filesystem ends up read-only gets an ``emptyDir`` mounted at each of the
policy's writable paths (``/tmp``) where it has nothing mounted yet.
"""

from __future__ import annotations

import re
from typing import Any

from mutators.fields import (
    container_label,
    ensure_list,
    fill_key,
    normalise_path,
    read_field,
)
from mutators.memo import once_per_settings
from mutators.result import MutatorResult
from policies.model import SecurityContextSettings
from policies.podspec import PodTemplate, iter_containers

JsonObject = dict[str, Any]
CONTAINER_LISTS = ("initContainers", "containers")
WRITABLE_VOLUME_PREFIX = "mlgate-writable"


def mutate_pod(
    template: PodTemplate, *, obj: JsonObject, settings: SecurityContextSettings
) -> MutatorResult:
    """Harden the pod spec of ``template``; see the module docstring for what is left out."""
    del obj  # the rule needs nothing beyond the pod spec
    spec = template.spec
    if read_field(spec, "os", "name") == "windows":
        return MutatorResult()
    warnings: list[str] = []
    pod_context = _context_of(spec)
    # NOTE: runAsNonRoot: true on a pod that explicitly runs something as root would keep the
    # kubelet from starting it; the root part is left alone, and the warning says so.
    runs_as_root = pod_context.get("runAsUser") == 0
    # (list name, container, its securityContext): each context read once, for every step.
    containers = []
    for list_name, container in iter_containers(spec, CONTAINER_LISTS):
        context = _context_of(container)
        runs_as_root = runs_as_root or context.get("runAsUser") == 0
        containers.append((list_name, container, context))
    skip_non_root = (
        settings.run_as_non_root
        and runs_as_root
        and not settings.override
        and pod_context.get("runAsNonRoot") is None
    )
    root_note = "; runAsNonRoot not set on the pod" if skip_non_root else ""
    changed = _harden_pod(
        spec,
        pod_context,
        skip_non_root=skip_non_root,
        root_note=root_note,
        settings=settings,
        warnings=warnings,
    )
    for list_name, container, context in containers:
        changed |= _harden_container(
            container, list_name, context, root_note=root_note, settings=settings, warnings=warnings
        )
    if settings.read_only_root_filesystem:
        writable = _writable_volumes(settings)
        for _, container, context in containers:
            # The context as hardened: attached to the container if anything was written in it.
            if context.get("readOnlyRootFilesystem") is True:
                changed |= _mount_writable_paths(spec, container, writable, warnings=warnings)
    return MutatorResult(changed=changed, warnings=tuple(warnings))


# NOTE: the pod's and each container's securityContext are read and filled in through one
# local dict, attached to its owner only once something is written into it (so that nothing
# leaves an empty ``{}`` behind), rather than through ``fill_field`` walking down to it again
# for every field: 20 such walks per request were a tenth of the mutators' instructions.
def _harden_pod(
    spec: JsonObject,
    context: JsonObject,
    *,
    skip_non_root: bool,
    root_note: str,
    settings: SecurityContextSettings,
    warnings: list[str],
) -> bool:
    override = settings.override
    changed = False
    if settings.run_as_non_root and not skip_non_root:
        fill = fill_key(context, "runAsNonRoot", True, override=override)
        changed |= fill in ("added", "replaced")
        if fill == "kept":
            warnings.append("pod securityContext.runAsNonRoot: false left alone")

    for field, value in (
        ("runAsUser", settings.run_as_user),
        ("runAsGroup", settings.run_as_group),
        ("fsGroup", settings.fs_group),
    ):
        if value is None:
            continue
        fill = fill_key(context, field, value, override=override)
        changed |= fill in ("added", "replaced")
        if fill == "kept" and context[field] == 0 and value != 0:
            note = root_note if field == "runAsUser" else ""
            warnings.append(f"pod securityContext.{field}: 0 (root) left alone{note}")

    if settings.seccomp_profile is not None:
        fill = fill_key(
            context, "seccompProfile", {"type": settings.seccomp_profile}, override=override
        )
        changed |= fill in ("added", "replaced")
        if fill == "kept" and read_field(context, "seccompProfile", "type") == "Unconfined":
            warnings.append("pod seccompProfile Unconfined left alone")
    if changed:
        _attach_context(spec, context)
    return changed


def _harden_container(
    container: JsonObject,
    list_name: str,
    context: JsonObject,
    *,
    root_note: str,
    settings: SecurityContextSettings,
    warnings: list[str],
) -> bool:
    override = settings.override
    changed = False
    if context.get("runAsUser") == 0:
        who = container_label(list_name, container)
        warnings.append(f"{who}: runAsUser: 0 (root) left alone{root_note}")
    if context.get("runAsNonRoot") is False and settings.run_as_non_root:
        warnings.append(f"{container_label(list_name, container)}: runAsNonRoot: false left alone")
    profile = context.get("seccompProfile")  # read_field written out: once per container
    if (
        settings.seccomp_profile
        and isinstance(profile, dict)
        and profile.get("type") == "Unconfined"
    ):
        who = container_label(list_name, container)
        warnings.append(f"{who}: seccompProfile Unconfined left alone")

    if not settings.allow_privilege_escalation:
        blocker = _escalation_blocker(context)
        if blocker is not None:
            who = container_label(list_name, container)
            warnings.append(f"{who}: {blocker}; allowPrivilegeEscalation not set")
        else:
            fill = fill_key(context, "allowPrivilegeEscalation", False, override=override)
            changed |= fill in ("added", "replaced")
            if fill == "kept":
                who = container_label(list_name, container)
                warnings.append(f"{who}: allowPrivilegeEscalation: true left alone")

    fill = fill_key(
        context, "readOnlyRootFilesystem", settings.read_only_root_filesystem, override=override
    )
    changed |= fill in ("added", "replaced")
    if fill == "kept" and settings.read_only_root_filesystem:
        who = container_label(list_name, container)
        warnings.append(f"{who}: readOnlyRootFilesystem: false left alone")

    if settings.drop_capabilities:
        changed |= _drop_capabilities(context, settings.drop_capabilities, override=override)
    if changed:
        _attach_context(container, context)
    return changed


def _escalation_blocker(context: JsonObject) -> str | None:
    """Why ``allowPrivilegeEscalation: false`` would get the container rejected, if it would."""
    if context.get("privileged") is True:
        return "privileged: true"
    capabilities = context.get("capabilities")  # read_field written out: once per container
    added = capabilities.get("add") if isinstance(capabilities, dict) else None
    if isinstance(added, list) and {"SYS_ADMIN", "CAP_SYS_ADMIN"} & set(map(str, added)):
        return "capability SYS_ADMIN added"
    return None


def _drop_capabilities(context: JsonObject, drop: tuple[str, ...], *, override: bool) -> bool:
    capabilities = context.get("capabilities")
    if not isinstance(capabilities, dict):
        context["capabilities"] = {"drop": list(drop)}
        return True
    current = capabilities.get("drop")
    if not isinstance(current, list):
        capabilities["drop"] = list(drop)
        return True
    if not override:
        return False
    missing = [name for name in drop if name not in current]
    current.extend(missing)
    return bool(missing)


def _mount_writable_paths(
    spec: JsonObject,
    container: JsonObject,
    writable: tuple[tuple[str, str, str], ...],
    *,
    warnings: list[str],
) -> bool:
    """Mount an emptyDir at each of ``writable`` (``_writable_volumes``) not mounted yet."""
    changed = False
    mounts = container.get("volumeMounts")
    mounted = set()
    if isinstance(mounts, list):
        for mount in mounts:
            if isinstance(mount, dict):
                mounted.add(normalise_path(str(mount.get("mountPath", ""))))
    for path, normalised, name in writable:
        if normalised in mounted:
            continue
        volume = _volume(spec, name)
        if volume is None:
            ensure_list(spec, "volumes").append({"name": name, "emptyDir": {}})
        elif not isinstance(volume.get("emptyDir"), dict):
            warnings.append(f'volume "{name}" exists and is not an emptyDir; {path} not mounted')
            continue
        ensure_list(container, "volumeMounts").append({"name": name, "mountPath": path})
        mounted.add(normalised)
        changed = True
    return changed


@once_per_settings
def _writable_volumes(settings: SecurityContextSettings) -> tuple[tuple[str, str, str], ...]:
    """(path, path without trailing slash, emptyDir volume name) of each nameable writable path."""
    return tuple(
        (path, normalise_path(path), name)
        for path in settings.writable_paths
        if (name := writable_volume_name(path)) is not None
    )


def writable_volume_name(path: str) -> str | None:
    """The emptyDir volume for a writable path: ``/tmp`` -> ``mlgate-writable-tmp``.

    A DNS label (63 characters at most); None for a path with nothing to name it by (``/``).
    """
    slug = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")
    if not slug:
        return None
    return f"{WRITABLE_VOLUME_PREFIX}-{slug}"[:63].rstrip("-")


def _volume(spec: JsonObject, name: str) -> JsonObject | None:
    volumes = spec.get("volumes")
    if not isinstance(volumes, list):
        return None
    for volume in volumes:
        if isinstance(volume, dict) and volume.get("name") == name:
            return volume
    return None


def _context_of(node: JsonObject) -> JsonObject:
    """``node``'s securityContext to read and fill in: a new dict when it has none."""
    context = node.get("securityContext")
    return context if isinstance(context, dict) else {}


def _attach_context(node: JsonObject, context: JsonObject) -> None:
    """Put a filled-in ``context`` (from ``_context_of``) on ``node`` if it is not there yet."""
    if node.get("securityContext") is not context:
        node["securityContext"] = context
