"""The Kubernetes API calls of certificate management: the Secret and the caBundle.

The only module of ``certs`` that talks to the API server. ``ApiException`` is turned into our
own errors here, once: a 409 into ``ConflictError`` (the manager reads again), anything else
into ``ClusterError``.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from certs.manager import (
    CertificateManagerError,
    CertificateState,
    ConflictError,
    StoredState,
    decode_state,
    encode_state,
    fingerprint_bundle,
)

DEFAULT_MUTATING_NAME = "mlgate"
DEFAULT_VALIDATING_NAME = "mlgate"
DEFAULT_SECRET_NAME = "mlgate-certs"


class ClusterError(CertificateManagerError):
    """A Kubernetes API call failed."""


def load_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An API client from ``kubeconfig``, else in-cluster config, else the default kubeconfig."""
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return client.ApiClient()
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    except (config.ConfigException, OSError) as error:
        raise ClusterError(f"no usable Kubernetes configuration: {error}") from error
    return client.ApiClient(configuration)


def inject_ca_bundle(
    api_client: client.ApiClient,
    *,
    bundle_pem: bytes,
    mutating_name: str = DEFAULT_MUTATING_NAME,
    validating_name: str = DEFAULT_VALIDATING_NAME,
) -> list[str]:
    """Set ``caBundle`` on every webhook of both configurations; return what was changed.

    A configuration that does not exist is skipped; webhooks already holding the bundle are
    left alone. Each change is a JSON patch guarded by a ``test`` of the webhook's name, so a
    configuration edited meanwhile is not patched at the wrong index.
    """
    api = client.AdmissionregistrationV1Api(api_client)
    wanted = base64.b64encode(bundle_pem).decode()
    changed: list[str] = []
    targets = [
        (
            "MutatingWebhookConfiguration",
            mutating_name,
            api.read_mutating_webhook_configuration,
            api.patch_mutating_webhook_configuration,
        ),
        (
            "ValidatingWebhookConfiguration",
            validating_name,
            api.read_validating_webhook_configuration,
            api.patch_validating_webhook_configuration,
        ),
    ]
    for kind, name, read, patch in targets:
        configuration = _read_optional(read, name)
        if configuration is None:
            continue
        ops: list[dict[str, Any]] = []
        for index, webhook in enumerate(configuration.webhooks or []):
            if (webhook.client_config.ca_bundle or "") == wanted:
                continue
            ops.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook.name})
            ops.append(
                {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": wanted}
            )
        if ops:
            _call(patch, name, ops)
            changed.append(f"{kind}/{name}")
    return changed


def read_published_ca_fingerprints(
    api_client: client.ApiClient,
    *,
    mutating_name: str = DEFAULT_MUTATING_NAME,
    validating_name: str = DEFAULT_VALIDATING_NAME,
) -> frozenset[str] | None:
    """CA fingerprints present in every webhook's caBundle; None if neither configuration exists."""
    api = client.AdmissionregistrationV1Api(api_client)
    bundles: list[frozenset[str]] = []
    found = False
    for read, name in (
        (api.read_mutating_webhook_configuration, mutating_name),
        (api.read_validating_webhook_configuration, validating_name),
    ):
        configuration = _read_optional(read, name)
        if configuration is None:
            continue
        found = True
        for webhook in configuration.webhooks or []:
            raw = base64.b64decode(webhook.client_config.ca_bundle or "")
            try:
                bundles.append(fingerprint_bundle(raw))
            except ValueError:
                bundles.append(frozenset())
    if not found:
        return None
    return frozenset.intersection(*bundles) if bundles else frozenset()


@dataclass
class KubeCertificateStore:
    """``CertificateStore`` over a Secret and the two webhook configurations."""

    api_client: client.ApiClient
    namespace: str
    secret_name: str = DEFAULT_SECRET_NAME
    mutating_name: str = DEFAULT_MUTATING_NAME
    validating_name: str = DEFAULT_VALIDATING_NAME
    # The Secret as last read, so a replace keeps its labels and other annotations.
    _last_read: Any = field(default=None, repr=False)

    def read_state(self) -> StoredState:
        core = client.CoreV1Api(self.api_client)
        secret = _read_optional(core.read_namespaced_secret, self.secret_name, self.namespace)
        self._last_read = secret
        if secret is None:
            return StoredState(state=None, resource_version=None)
        data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        state = decode_state(data, secret.metadata.annotations or {})
        return StoredState(state=state, resource_version=secret.metadata.resource_version)

    def write_state(self, state: CertificateState, *, resource_version: str | None) -> None:
        core = client.CoreV1Api(self.api_client)
        data, annotations = encode_state(state)
        encoded: dict[str, bytes | str] = {k: base64.b64encode(v).decode() for k, v in data.items()}
        if resource_version is None:
            body = client.V1Secret(
                metadata=client.V1ObjectMeta(
                    name=self.secret_name,
                    namespace=self.namespace,
                    annotations=annotations,
                    labels={"app.kubernetes.io/name": "mlgate"},
                ),
                type="Opaque",
                data=encoded,
            )
            _call(core.create_namespaced_secret, self.namespace, body)
            return
        secret = self._last_read
        if secret is None or secret.metadata.resource_version != resource_version:
            raise ConflictError("the secret was not read at this version")
        secret.metadata.annotations = {**(secret.metadata.annotations or {}), **annotations}
        secret.data = encoded
        _call(core.replace_namespaced_secret, self.secret_name, self.namespace, secret)

    def read_published_ca_fingerprints(self) -> frozenset[str] | None:
        return read_published_ca_fingerprints(
            self.api_client, mutating_name=self.mutating_name, validating_name=self.validating_name
        )

    def publish_ca_bundle(self, bundle_pem: bytes) -> None:
        inject_ca_bundle(
            self.api_client,
            bundle_pem=bundle_pem,
            mutating_name=self.mutating_name,
            validating_name=self.validating_name,
        )


def _read_optional(read: Any, *args: Any) -> Any:
    try:
        return read(*args)
    except ApiException as error:
        if error.status == 404:
            return None
        raise _wrap(error) from error


def _call(method: Any, *args: Any) -> Any:
    try:
        return method(*args)
    except ApiException as error:
        raise _wrap(error) from error


def _wrap(error: ApiException) -> CertificateManagerError:
    detail = f"{error.status} {error.reason}"
    if error.status == 409:
        return ConflictError(f"conflict: {detail}")
    return ClusterError(f"Kubernetes API error: {detail}")
