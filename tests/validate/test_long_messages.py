"""A message that quotes a huge value the user wrote is cut, and still says what to fix."""

from __future__ import annotations

from typing import Any

from falcon import testing
from hypothesis import given
from hypothesis import strategies as st

from policies.results import MAX_MESSAGE, CheckResult, shorten_message
from tests.audit.records import RecordingSink
from tests.harness import load_review
from webhook.app import create_app
from webhook.settings import Settings


@given(st.text(max_size=5000), st.integers(min_value=10, max_value=3000))
def test_a_shortened_message_keeps_its_beginning_and_end_and_says_how_much_went(
    message: str, limit: int
) -> None:
    short = shorten_message(message, limit)
    if len(message) <= limit:
        assert short == message
        return
    keep = limit // 2
    cut = len(message) - 2 * keep
    assert short.startswith(message[:keep])
    assert short.endswith(message[-keep:])
    assert f"[... {cut} characters cut ...]" in short
    assert len(short) <= limit + len(f" [... {cut} characters cut ...] ")


def test_a_result_keeps_at_most_max_message_characters() -> None:
    long = CheckResult("p", "r", "fail", "x" * (10 * MAX_MESSAGE))
    assert len(long.message) < MAX_MESSAGE + 50
    assert CheckResult("p", "r", "fail", "y" * MAX_MESSAGE).message == "y" * MAX_MESSAGE


def test_a_huge_annotation_value_is_cut_in_the_denial_and_its_audit_record() -> None:
    review: dict[str, Any] = load_review("002-validate-create-deployment-recommendation-model")
    value = "high" + "!" * 200_000  # annotations may hold 256 KB in all
    annotations = review["request"]["object"]["metadata"].setdefault("annotations", {})
    annotations["mlgate.io/accuracy"] = value
    sink = RecordingSink()
    app = create_app(Settings(watch_interval=0), audit=sink)

    answer = testing.TestClient(app).simulate_post("/validate", json=review)

    assert answer.status_code == 200, answer.text
    response = answer.json["response"]
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert len(message) < 4 * MAX_MESSAGE
    assert "characters cut ...]" in message
    (record,) = [r for r in sink.records if r.rule == "labels.accuracy"]
    assert len(record.message) < MAX_MESSAGE + 50
    assert record.message.startswith(
        "deployment ml-production/recommendation-model has annotation mlgate.io/accuracy='high!!!"
    )
    # what to fix is at the end of the message, and kept
    assert record.message.endswith("as a decimal fraction such as 0.92 (at least 0.85)")
