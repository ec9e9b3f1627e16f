"""The policy model: what a policy file says, as frozen dataclasses.

The loader (``policies.loader``) builds these from YAML after the JSON Schema has checked the
shape, so everything here can trust its types. Mutators and checks read their settings from
here; nothing here knows HTTP, files or the Kubernetes API.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

Action = Literal["deny", "warn", "audit"]
FailureAction = Literal["allow", "deny"]

API_VERSION = "mlgate.io/v1alpha1"
KIND = "Policy"


@dataclass(frozen=True)
class LabelRequirement:
    """One ``matchExpressions`` entry with Kubernetes semantics."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector; the empty selector matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[LabelRequirement, ...] = ()


@dataclass(frozen=True)
class NamespaceMatch:
    """Namespace names and globs (``fnmatch``) to include, and to exclude after that."""

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Match:
    """What a policy applies to; every part must hold."""

    namespaces: NamespaceMatch = NamespaceMatch()
    # Labels of the namespace itself (looked up before deciding); None: not consulted.
    namespace_selector: LabelSelector | None = None
    # Labels of the workload (metadata.labels of the object).
    selector: LabelSelector | None = None
    # Kind names such as "Deployment"; empty means every pod-bearing kind.
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class Exemption:
    """Who or what a policy's checks skip; every given part must hold, ``expires`` included."""

    namespaces: tuple[str, ...] = ()
    selector: LabelSelector | None = None
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()  # "namespace/name" or "namespace/*"
    rules: tuple[str, ...] = ()  # rule ids this exemption is limited to; empty: all rules
    expires: dt.datetime | None = None  # UTC; the exemption no longer applies from then on
    reason: str = ""


# --- mutate -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str


@dataclass(frozen=True)
class ModelConfigSettings:
    """Model config injection: ConfigMap volume, Secret envFrom, MODEL_* and default env."""

    enabled: bool = True
    config_annotation: str = "mlgate.io/model-config"
    secrets_annotation: str = "mlgate.io/model-secrets"
    mount_path: str = "/etc/mlgate/model"
    volume_name: str = "mlgate-model-config"
    path_env: str = "MODEL_CONFIG_PATH"
    name_labels: tuple[str, ...] = ("app", "app.kubernetes.io/name")
    version_labels: tuple[str, ...] = ("version", "app.kubernetes.io/version")
    default_env: tuple[EnvVar, ...] = (EnvVar("BATCH_SIZE", "32"),)
    override: bool = False


@dataclass(frozen=True)
class ResourceDefaultsSettings:
    """Default requests and limits per container (init containers too)."""

    enabled: bool = True
    requests: tuple[tuple[str, str], ...] = (("cpu", "500m"), ("memory", "1Gi"))
    limits: tuple[tuple[str, str], ...] = (("cpu", "1000m"), ("memory", "2Gi"))
    override: bool = False


@dataclass(frozen=True)
class Toleration:
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: str | None = None


@dataclass(frozen=True)
class GpuSchedulingSettings:
    """GPU scheduling for containers that ask for GPUs, or workloads annotated for them."""

    enabled: bool = True
    resource_name: str = "nvidia.com/gpu"
    count_annotation: str = "mlgate.io/gpu"
    type_annotation: str = "mlgate.io/gpu-type"
    type_node_label: str = "accelerator"
    node_selector: tuple[tuple[str, str], ...] = (("nvidia.com/gpu.present", "true"),)
    tolerations: tuple[Toleration, ...] = (
        Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),
    )
    runtime_class_name: str | None = None
    priority_class_name: str | None = None
    override: bool = False


@dataclass(frozen=True)
class SecurityContextSettings:
    """Non-root pod and container security contexts, with writable emptyDirs."""

    enabled: bool = True
    run_as_non_root: bool = True
    run_as_user: int | None = 1000
    run_as_group: int | None = None
    fs_group: int | None = 2000
    seccomp_profile: str | None = "RuntimeDefault"
    allow_privilege_escalation: bool = False
    read_only_root_filesystem: bool = True
    drop_capabilities: tuple[str, ...] = ("ALL",)
    writable_paths: tuple[str, ...] = ("/tmp",)
    override: bool = False


@dataclass(frozen=True)
class MetricsAnnotationsSettings:
    """Prometheus scrape annotations on the pod (template)."""

    enabled: bool = True
    port_names: tuple[str, ...] = ("metrics", "http")
    default_port: int = 8080
    path: str = "/metrics"
    override: bool = False


@dataclass(frozen=True)
class MutateSpec:
    """Settings of each mutator; None: that mutator is off for this policy."""

    model_config: ModelConfigSettings | None = None
    resource_defaults: ResourceDefaultsSettings | None = None
    gpu_scheduling: GpuSchedulingSettings | None = None
    security_context: SecurityContextSettings | None = None
    metrics_annotations: MetricsAnnotationsSettings | None = None


# --- validate -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceBudget:
    """What one workload may take in total (replicas x effective pod request) in a namespace."""

    namespaces: tuple[str, ...] = ("*",)
    requests: tuple[tuple[str, str], ...] = ()
    limits: tuple[tuple[str, str], ...] = ()
    pods: int | None = None


@dataclass(frozen=True)
class QuotaSettings:
    """Static per-workload budgets and the live ResourceQuota check."""

    action: Action = "deny"
    budgets: tuple[ResourceBudget, ...] = ()
    resource_quota: bool = True  # check against the namespace's live ResourceQuota objects
    failure_action: FailureAction = "allow"  # when the cluster cannot be read


@dataclass(frozen=True)
class ImageSettings:
    """Allowed repositories, tags and digests."""

    action: Action = "deny"
    allowed_repositories: tuple[str, ...] = ()  # globs over the normalised image name; empty: any
    disallow_latest: bool = True  # no ":latest" and no untagged image
    require_digest_namespaces: tuple[str, ...] = ()  # globs of namespaces that need "@sha256:"
    tag_matches_version: Action | None = "warn"  # image tag must equal the version label


@dataclass(frozen=True)
class LabelRule:
    name: str
    pattern: str | None = None  # full-match regular expression for the value


@dataclass(frozen=True)
class ValidationLabelSettings:
    """Required labels and the ML pipeline's model-validation gate."""

    action: Action = "deny"
    required_labels: tuple[LabelRule, ...] = (LabelRule("app"), LabelRule("version"))
    accuracy_annotation: str = "mlgate.io/accuracy"
    # int | float: a bound is worded as the policy gives it ("at least 1", not "at least 1.0"),
    # compiled (mypyc makes a float of an int it stores as float) or not.
    min_accuracy: int | float | None = 0.85
    bias_annotation: str = "mlgate.io/bias-score"
    max_bias_score: int | float | None = 0.1
    validated_annotation: str = "mlgate.io/validated"
    require_validated: bool = True


CheckSettings = QuotaSettings | ImageSettings | ValidationLabelSettings


@dataclass(frozen=True)
class ValidateSpec:
    """Settings of each check; None: that check is off for this policy."""

    quota: QuotaSettings | None = None
    images: ImageSettings | None = None
    labels: ValidationLabelSettings | None = None
    # Per-rule action overrides by rule id ("images.tag-matches-version" -> "warn").
    rule_actions: tuple[tuple[str, Action], ...] = ()
    # (field name, settings) of each check turned on, in the order above; set by __post_init__.
    checks: tuple[tuple[str, CheckSettings], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # NOTE: worked out once, when the policy is loaded: the engine asks it of every selected
        # policy on every request, and most policies turn on one check or none.
        checks = (("quota", self.quota), ("images", self.images), ("labels", self.labels))
        on = tuple((name, settings) for name, settings in checks if settings is not None)
        object.__setattr__(self, "checks", on)


# --- the policy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a policy came from, for error messages and ``mutated-by``."""

    file: str
    line: int


@dataclass(frozen=True)
class Policy:
    name: str
    match: Match = Match()
    mutate: MutateSpec = MutateSpec()
    validate: ValidateSpec = ValidateSpec()
    exemptions: tuple[Exemption, ...] = ()
    source: Source | None = None


@dataclass(frozen=True)
class PolicySet:
    """Every loaded policy, in a stable order (file name, then position in the file)."""

    policies: tuple[Policy, ...] = ()
    fingerprint: str = ""
    errors: tuple[str, ...] = field(default=())
