"""The speed layer: Spark Structured Streaming from Kafka to the HBase speed views and the raw
archive. Readers use its read interface (:mod:`speed_layer.views`) through
:func:`open_speed_views`, never the store's classes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.config import TallyConfig
    from speed_layer.views import SpeedViews


def open_speed_views(cfg: TallyConfig, timeout_ms: int | None = None,
                     retry_s: float | None = None) -> SpeedViews:
    """The speed views of an installation (HBase through Thrift), with the reader's own
    timeout and retry budget when given."""
    from speed_layer.store import HBaseSpeedStore

    if timeout_ms is not None:
        cfg = cfg.replace(hbase={"timeout_ms": timeout_ms})
    return HBaseSpeedStore(cfg, retry_s=retry_s)
