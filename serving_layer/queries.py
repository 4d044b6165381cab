"""``GET /v1/videos/{video_id}/counts`` and ``GET /v1/top``: merged batch + speed answers."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from serving_layer import service
from serving_layer.context import resources, tally_cfg
from serving_layer.params import parse_counts, parse_top

bp = Blueprint("queries", __name__)


# Any text between the slashes reaches parse_video_id, which answers a bad one with a 400
# naming video_id (werkzeug's own converters stop at a newline: a 404 that names nothing).
@bp.get("/v1/videos/<any_text:video_id>/counts", merge_slashes=False)
def get_counts(video_id: str):
    q = parse_counts(video_id, request.args, tally_cfg())
    return jsonify(service.counts(resources(), q))


@bp.get("/v1/top")
def get_top():
    q = parse_top(request.args, tally_cfg())
    return jsonify(service.top(resources(), q))
