"""The decision log: one line per admission, saying who asked for what and what was decided.

Lines go to the ``mlgate.decisions`` logger, formatted by ``webhook.jsonlog.JsonLogFormatter`` and
written by ``webhook.logwriter.BackgroundHandler`` off the request path.
"""

from __future__ import annotations

import logging
from typing import Any

from policies.results import CheckResult
from webhook.admission import Outcome
from webhook.logrecord import InfoRecord
from webhook.logwriter import BackgroundHandler
from webhook.review import AdmissionRequest

decision_log = logging.getLogger("mlgate.decisions")


def log_decision(fields: dict[str, Any]) -> None:
    """Log one decision line with ``fields`` (see ``decision_fields``).

    NOTE: as the server configures it (one ``BackgroundHandler``, JSON lines on stdout), the
    line is made from the fields without a record (``BackgroundHandler.write_info``: ~4% of a
    loaded server's requests/s); with any other handlers, filters or levels the record goes
    through them as any other.
    """
    if not decision_log.isEnabledFor(logging.INFO):
        return
    handlers = decision_log.handlers
    if (
        len(handlers) == 1
        and isinstance(handlers[0], BackgroundHandler)
        and not decision_log.filters
        and not decision_log.propagate  # else the root's handlers get the record too
        and handlers[0].write_info(decision_log.name, "admission", fields)
    ):
        return
    decision_log.handle(InfoRecord(decision_log.name, "admission", fields=fields))


def decision_fields(
    webhook: str, request: AdmissionRequest, outcome: Outcome, seconds: float
) -> dict[str, Any]:
    """The decision log line: who asked for what, what was decided and by which policies, and
    the rules that failed."""
    fields: dict[str, Any] = {
        "webhook": webhook,
        "uid": request.uid,
        "kind": request.kind,
        "resource": request.resource + (f"/{request.sub_resource}" if request.sub_resource else ""),
        "namespace": request.namespace,
        "name": request.name,
        "operation": request.operation,
        "user": request.username,
        "dry_run": request.dry_run,
        "decision": outcome.decision,
        "policies": list(outcome.policies),
        "latency_ms": round(seconds * 1000, 3),
    }
    if outcome.mutators:
        fields["mutators"] = list(outcome.mutators)
    if outcome.note:
        fields["note"] = outcome.note
    failed = [r for r in outcome.results if r.failed]
    if failed:
        fields["results"] = [_result_fields(r) for r in failed]
    fields.update(outcome.extra)
    return fields


def _result_fields(result: CheckResult) -> dict[str, str]:
    """A failing rule, without its message: every failing result is an audit record, whose
    own JSON line (same ``uid``) and row in the store carry the message.

    NOTE: the messages were a third of a denied request's decision line, and the same text is
    in its audit lines and the response already: ~1 KB less on stdout per denied request.
    """
    return {
        "policy": result.policy,
        "rule": result.rule,
        "action": result.action,
        "status": result.status,
    }
