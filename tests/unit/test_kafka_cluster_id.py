"""The local broker's cluster id: Kafka's form, and never one its storage tool reads as an option
(a random id starts with "-" once in 64)."""

from __future__ import annotations

import base64
import uuid

from tally.devstack import stack


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch):
    dash = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))  # urlsafe base64 "-A..."
    plain = uuid.UUID(bytes=bytes([0x04]) + bytes(15))
    assert base64.urlsafe_b64encode(dash.bytes).decode().startswith("-")
    drawn = iter([dash, dash, plain])
    monkeypatch.setattr(stack.uuid, "uuid4", lambda: next(drawn))
    cluster_id = stack.kafka_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")
    assert len(cluster_id) == 22 and not cluster_id.startswith("-")
