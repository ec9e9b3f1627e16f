"""The audit record's shared-fields constructor."""

from __future__ import annotations

import dataclasses

from tests.audit.records import make_record
from webhook.audit.record import AuditRecord, RequestFields


def test_a_record_of_a_rule_equals_one_built_field_by_field() -> None:
    record = make_record(1, message="two\nlines")
    fields = dataclasses.asdict(record)
    own = {name: fields.pop(name) for name in ("policy", "rule", "action", "message")}
    fields["groups"] = record.groups
    fields["images"] = record.images
    request: RequestFields = fields  # type: ignore[assignment]
    assert AuditRecord.of_rule(request, **own) == record
