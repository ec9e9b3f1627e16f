"""An ``AdmissionContext`` made to order: a CREATE of Deployment ml-prod/model by admin."""

from __future__ import annotations

import datetime as dt
from typing import Any

from policies.context import AdmissionContext, UserInfo

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def make_ctx(**overrides: Any) -> AdmissionContext:
    values: dict[str, Any] = {
        "uid": "u",
        "operation": "CREATE",
        "kind": "Deployment",
        "group": "apps",
        "version": "v1",
        "resource": "deployments",
        "sub_resource": "",
        "namespace": "ml-prod",
        "name": "model",
        "obj": {},
        "old_obj": None,
        "user": UserInfo("admin", ("system:masters",)),
        "now": NOW,
    }
    values.update(overrides)
    return AdmissionContext(**values)
