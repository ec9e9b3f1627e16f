"""Load policy files: YAML documents in, a ``PolicySet`` or errors naming file, line and field.

Each document is checked against the published JSON Schema (``policies/schema/policy.schema.json``,
the same file editors use), then against what a schema cannot say (regular expressions that do
not compile, duplicate names). Every error carries the line of the field it is about, taken from
the YAML nodes, so ``mlgate policy lint`` prints ``file:line: field: message``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

from policies.model import (
    Action,
    EnvVar,
    Exemption,
    GpuSchedulingSettings,
    ImageSettings,
    LabelRequirement,
    LabelRule,
    LabelSelector,
    Match,
    MetricsAnnotationsSettings,
    ModelConfigSettings,
    MutateSpec,
    NamespaceMatch,
    Policy,
    PolicySet,
    QuotaSettings,
    ResourceBudget,
    ResourceDefaultsSettings,
    SecurityContextSettings,
    Source,
    Toleration,
    ValidateSpec,
    ValidationLabelSettings,
)

POLICY_SUFFIXES = (".yaml", ".yml", ".json")
T = TypeVar("T")
Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class PolicyError:
    """One problem in a policy file."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class PolicyLoadError(Exception):
    """The policy files hold errors; the set they describe must not be used."""

    def __init__(self, errors: list[PolicyError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


@cache
def policy_schema() -> dict[str, Any]:
    """The JSON Schema of one policy document."""
    text = resources.files("policies").joinpath("schema/policy.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(policy_schema())


def default_policy_dir() -> Path:
    """The folder of default policy files shipped in the package."""
    return Path(str(resources.files("policies").joinpath("defaults")))


def list_policy_files(directory: Path) -> list[Path]:
    """Policy files of a folder, sorted by name.

    Hidden entries are skipped: a mounted ConfigMap keeps its real files under ``..data``
    and shows them as symlinks, which are followed.
    """
    return sorted(
        p
        for p in directory.iterdir()
        if not p.name.startswith(".") and p.suffix in POLICY_SUFFIXES and p.is_file()
    )


def load_policy_dir(directory: Path) -> PolicySet:
    """Every policy in the folder's files, or ``PolicyLoadError`` listing every error."""
    if not directory.is_dir():
        raise PolicyLoadError([PolicyError(str(directory), 0, "", "is not a folder")])
    files = list_policy_files(directory)
    texts = [(str(path), path.read_text(encoding="utf-8", errors="replace")) for path in files]
    return load_policy_texts(texts)


def load_policy_texts(texts: Iterable[tuple[str, str]]) -> PolicySet:
    """Policies from (file name, text) pairs, in order; ``PolicyLoadError`` on any error."""
    policies: list[Policy] = []
    errors: list[PolicyError] = []
    digest = hashlib.sha256()
    seen: dict[str, Source] = {}
    for file, text in texts:
        digest.update(file.encode() + b"\0" + text.encode() + b"\0")
        file_policies, file_errors = parse_policy_file(file, text)
        errors += file_errors
        for policy in file_policies:
            assert policy.source is not None
            first = seen.get(policy.name)
            if first is not None:
                errors.append(
                    PolicyError(
                        file,
                        policy.source.line,
                        "metadata.name",
                        f"policy {policy.name!r} is already defined at {first.file}:{first.line}",
                    )
                )
                continue
            seen[policy.name] = policy.source
            policies.append(policy)
    if errors:
        raise PolicyLoadError(errors)
    return PolicySet(policies=tuple(policies), fingerprint=digest.hexdigest())


def parse_policy_file(file: str, text: str) -> tuple[list[Policy], list[PolicyError]]:
    """The policies of one file and the errors found in it."""
    loader = yaml.SafeLoader(text)
    try:
        nodes = []
        while loader.check_node():
            nodes.append(loader.get_node())
    except yaml.YAMLError as exc:
        loader.dispose()
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc)
        return [], [PolicyError(file, line, "", f"not valid YAML: {problem}")]
    policies: list[Policy] = []
    errors: list[PolicyError] = []
    for node in nodes:
        if node is None:
            continue
        lines: dict[Path_, int] = {}
        try:
            document = _construct(node, (), lines, loader)
        except _DocumentError as exc:
            errors.append(PolicyError(file, exc.line, exc.field, exc.message))
            continue
        if document is None:
            continue
        policy, doc_errors = parse_policy_document(document, file=file, lines=lines)
        errors += doc_errors
        if policy is not None:
            policies.append(policy)
    loader.dispose()
    return policies, errors


def parse_policy_document(
    document: Any, *, file: str, lines: Mapping[Path_, int]
) -> tuple[Policy | None, list[PolicyError]]:
    """One policy from a plain document; ``lines`` maps field paths to their line numbers."""

    def error_at(path: Path_, message: str) -> PolicyError:
        return PolicyError(file, _line_of(path, lines), format_path(path), message)

    schema_errors = list(_validator().iter_errors(document))
    if schema_errors:
        explained = [error_at(*_explain(e)) for e in _most_specific(schema_errors)]
        return None, sorted(explained, key=lambda e: (e.line, e.field))
    try:
        policy = _build_policy(document, Source(file=file, line=_line_of((), lines)))
    except _FieldError as exc:
        return None, [error_at(exc.path, exc.message)]
    return policy, []


def format_path(path: Path_) -> str:
    """``spec.match.kinds[2]`` for ("spec", "match", "kinds", 2)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


# --- YAML nodes to plain data, remembering lines ----------------------------------------------


class _DocumentError(Exception):
    def __init__(self, line: int, field: str, message: str) -> None:
        self.line, self.field, self.message = line, field, message


def _construct(
    node: yaml.Node, path: Path_, lines: dict[Path_, int], loader: yaml.SafeLoader
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, loader)
            if not isinstance(key, str):
                raise _DocumentError(
                    key_node.start_mark.line + 1, format_path(path), f"key {key!r} is not a string"
                )
            if key in result:
                raise _DocumentError(
                    key_node.start_mark.line + 1,
                    format_path((*path, key)),
                    "is given twice in the same mapping",
                )
            result[key] = _construct(value_node, (*path, key), lines, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), lines, loader) for i, item in enumerate(node.value)]
    return _scalar(node, loader)


def _scalar(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise _DocumentError(node.start_mark.line + 1, "", "a key must be a plain value")
    # NOTE: YAML turns unquoted dates into date objects; policy fields want the text as written.
    if node.tag == "tag:yaml.org,2002:timestamp":
        return node.value
    try:
        return loader.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError) as exc:
        raise _DocumentError(node.start_mark.line + 1, "", f"not a valid value: {exc}") from None


# --- schema errors in words ------------------------------------------------------------------


def _most_specific(errors: list[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    """For a ``oneOf``/``anyOf`` failure, the deepest sub-error says more than the summary."""
    out: list[jsonschema.ValidationError] = []
    for error in errors:
        if error.context:
            out.append(jsonschema.exceptions.best_match(error.context))
        else:
            out.append(error)
    return out


def _explain(error: jsonschema.ValidationError) -> tuple[Path_, str]:
    path: Path_ = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    validator, value = error.validator, error.instance
    if validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed)) if isinstance(value, dict) else []
        if extra:
            hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
            return (*path, extra[0]), f"unknown field{hint}"
    if validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        return path, f"missing required field {missing!r}"
    if validator in ("enum", "const"):
        options = schema.get("enum", [schema.get("const")])
        shown = ", ".join("null" if o is None else str(o) for o in options)
        return path, f"expected one of: {shown}; got {_show(value)}"
    if validator == "type":
        expected = schema.get("type")
        names: list[str] = expected if isinstance(expected, list) else [str(expected)]
        wanted = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        return path, f"expected {wanted}, got {_show(value)}"
    if validator == "pattern":
        if schema.get("description", "").startswith("A Kubernetes quantity"):
            return (
                path,
                f"expected a Kubernetes quantity such as 500m, 2 or 1Gi; got {_show(value)}",
            )
        return path, f"{_show(value)} does not match the expected form {schema.get('pattern')}"
    if validator in ("minimum", "maximum", "minLength"):
        return path, f"{_show(value)} is out of range ({validator} {error.validator_value})"
    return path, error.message


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return json.dumps(value, default=str)


def _line_of(path: Path_, lines: Mapping[Path_, int]) -> int:
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path, 1)


# --- plain data to the model -----------------------------------------------------------------


class _FieldError(Exception):
    def __init__(self, path: Path_, message: str) -> None:
        self.path, self.message = path, message


def _build_policy(doc: dict[str, Any], source: Source) -> Policy:
    spec = doc["spec"]
    return Policy(
        name=doc["metadata"]["name"],
        match=_build_match(spec.get("match", {})),
        mutate=_build_mutate(spec.get("mutate", {})),
        validate=_build_validate(spec.get("validate", {})),
        exemptions=tuple(
            _build_exemption(e, ("spec", "exemptions", i))
            for i, e in enumerate(spec.get("exemptions", []))
        ),
        source=source,
    )


def _build_match(data: dict[str, Any]) -> Match:
    namespaces = data.get("namespaces", {})
    return Match(
        namespaces=NamespaceMatch(
            include=tuple(namespaces.get("include", ["*"])),
            exclude=tuple(namespaces.get("exclude", [])),
        ),
        namespace_selector=_build_selector(
            data.get("namespaceSelector"), ("spec", "match", "namespaceSelector")
        ),
        selector=_build_selector(data.get("selector"), ("spec", "match", "selector")),
        kinds=tuple(data.get("kinds", [])),
    )


def _build_selector(data: dict[str, Any] | None, path: Path_) -> LabelSelector | None:
    if data is None:
        return None
    requirements = []
    for i, expr in enumerate(data.get("matchExpressions", [])):
        operator, values = expr["operator"], tuple(expr.get("values", []))
        if operator in ("In", "NotIn") and not values:
            raise _FieldError((*path, "matchExpressions", i, "values"), f"{operator} needs values")
        if operator in ("Exists", "DoesNotExist") and values:
            raise _FieldError(
                (*path, "matchExpressions", i, "values"), f"{operator} takes no values"
            )
        requirements.append(LabelRequirement(key=expr["key"], operator=operator, values=values))
    return LabelSelector(
        match_labels=tuple(sorted(data.get("matchLabels", {}).items())),
        match_expressions=tuple(requirements),
    )


def _build_mutate(data: dict[str, Any]) -> MutateSpec:
    return MutateSpec(
        model_config=_settings(ModelConfigSettings, data.get("modelConfig"), _MODEL_CONFIG),
        resource_defaults=_settings(
            ResourceDefaultsSettings, data.get("resourceDefaults"), _RESOURCE_DEFAULTS
        ),
        gpu_scheduling=_settings(GpuSchedulingSettings, data.get("gpuScheduling"), _GPU),
        security_context=_settings(SecurityContextSettings, data.get("securityContext"), _SECURITY),
        metrics_annotations=_settings(
            MetricsAnnotationsSettings, data.get("metricsAnnotations"), _METRICS
        ),
    )


def _build_validate(data: dict[str, Any]) -> ValidateSpec:
    labels = data.get("labels")
    if labels is not None:
        for i, rule in enumerate(labels.get("required", [])):
            pattern = rule.get("pattern")
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    path = ("spec", "validate", "labels", "required", i, "pattern")
                    raise _FieldError(path, f"not a valid regular expression: {exc}") from None
    actions: dict[str, Action] = data.get("ruleActions", {})
    return ValidateSpec(
        quota=_settings(QuotaSettings, data.get("quota"), _QUOTA),
        images=_settings(ImageSettings, data.get("images"), _IMAGES),
        labels=_settings(ValidationLabelSettings, labels, _LABELS),
        rule_actions=tuple(sorted(actions.items())),
    )


def _build_exemption(data: dict[str, Any], path: Path_) -> Exemption:
    expires = data.get("expires")
    return Exemption(
        namespaces=tuple(data.get("namespaces", [])),
        selector=_build_selector(data.get("selector"), (*path, "selector")),
        users=tuple(data.get("users", [])),
        groups=tuple(data.get("groups", [])),
        service_accounts=tuple(data.get("serviceAccounts", [])),
        rules=tuple(data.get("rules", [])),
        expires=_parse_time(expires, (*path, "expires")) if expires is not None else None,
        reason=data.get("reason", ""),
    )


def _parse_time(value: str, path: Path_) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _FieldError(path, f"not a date or RFC 3339 time: {exc}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _pairs(value: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(v)) for k, v in value.items())


def _tuple(value: list[Any]) -> tuple[Any, ...]:
    return tuple(value)


# YAML field -> (dataclass field, conversion). Fields the schema allows but not listed here
# would be silently ignored, so the tests check that every schema property appears here.
_Fields = dict[str, tuple[str, Any]]
_MODEL_CONFIG: _Fields = {
    "enabled": ("enabled", None),
    "override": ("override", None),
    "configAnnotation": ("config_annotation", None),
    "secretsAnnotation": ("secrets_annotation", None),
    "mountPath": ("mount_path", None),
    "volumeName": ("volume_name", None),
    "pathEnv": ("path_env", None),
    "nameLabels": ("name_labels", _tuple),
    "versionLabels": ("version_labels", _tuple),
    "defaultEnv": (
        "default_env",
        lambda v: tuple(EnvVar(name=e["name"], value=e["value"]) for e in v),
    ),
}
_RESOURCE_DEFAULTS: _Fields = {
    "enabled": ("enabled", None),
    "override": ("override", None),
    "requests": ("requests", _pairs),
    "limits": ("limits", _pairs),
}
_GPU: _Fields = {
    "enabled": ("enabled", None),
    "override": ("override", None),
    "resourceName": ("resource_name", None),
    "countAnnotation": ("count_annotation", None),
    "typeAnnotation": ("type_annotation", None),
    "typeNodeLabel": ("type_node_label", None),
    "nodeSelector": ("node_selector", _pairs),
    "tolerations": (
        "tolerations",
        lambda v: tuple(
            Toleration(
                key=t["key"],
                operator=t.get("operator", "Exists"),
                value=t.get("value"),
                effect=t.get("effect"),
            )
            for t in v
        ),
    ),
    "runtimeClassName": ("runtime_class_name", None),
    "priorityClassName": ("priority_class_name", None),
}
_SECURITY: _Fields = {
    "enabled": ("enabled", None),
    "override": ("override", None),
    "runAsNonRoot": ("run_as_non_root", None),
    "runAsUser": ("run_as_user", None),
    "runAsGroup": ("run_as_group", None),
    "fsGroup": ("fs_group", None),
    "seccompProfile": ("seccomp_profile", None),
    "allowPrivilegeEscalation": ("allow_privilege_escalation", None),
    "readOnlyRootFilesystem": ("read_only_root_filesystem", None),
    "dropCapabilities": ("drop_capabilities", _tuple),
    "writablePaths": ("writable_paths", _tuple),
}
_METRICS: _Fields = {
    "enabled": ("enabled", None),
    "override": ("override", None),
    "portNames": ("port_names", _tuple),
    "defaultPort": ("default_port", None),
    "path": ("path", None),
}
_QUOTA: _Fields = {
    "action": ("action", None),
    "budgets": (
        "budgets",
        lambda v: tuple(
            ResourceBudget(
                namespaces=tuple(b["namespaces"]),
                requests=_pairs(b.get("requests", {})),
                limits=_pairs(b.get("limits", {})),
                pods=b.get("pods"),
            )
            for b in v
        ),
    ),
    "resourceQuota": ("resource_quota", None),
    "failureAction": ("failure_action", None),
}
_IMAGES: _Fields = {
    "action": ("action", None),
    "allowedRepositories": ("allowed_repositories", _tuple),
    "disallowLatest": ("disallow_latest", None),
    "requireDigestNamespaces": ("require_digest_namespaces", _tuple),
    "tagMatchesVersion": ("tag_matches_version", None),
}
_LABELS: _Fields = {
    "action": ("action", None),
    "required": (
        "required_labels",
        lambda v: tuple(LabelRule(name=r["name"], pattern=r.get("pattern")) for r in v),
    ),
    "accuracyAnnotation": ("accuracy_annotation", None),
    "minAccuracy": ("min_accuracy", None),
    "biasAnnotation": ("bias_annotation", None),
    "maxBiasScore": ("max_bias_score", None),
    "validatedAnnotation": ("validated_annotation", None),
    "requireValidated": ("require_validated", None),
}

SETTINGS_FIELDS: dict[str, _Fields] = {
    "mutate.modelConfig": _MODEL_CONFIG,
    "mutate.resourceDefaults": _RESOURCE_DEFAULTS,
    "mutate.gpuScheduling": _GPU,
    "mutate.securityContext": _SECURITY,
    "mutate.metricsAnnotations": _METRICS,
    "validate.quota": _QUOTA,
    "validate.images": _IMAGES,
    "validate.labels": _LABELS,
}


def _settings(cls: type[T], data: dict[str, Any] | None, fields: _Fields) -> T | None:
    if data is None:
        return None
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name, convert = fields[key]
        kwargs[name] = convert(value) if convert is not None else value
    return cls(**kwargs)
