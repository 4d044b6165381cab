"""docs/configuration.md, generated from the config's models (schemas/config.py): every section
and key with its type, default, limits and description, so the page cannot drift from the code.

    python -m tally.devstack.configdoc > docs/configuration.md

tests/unit/test_config.py checks that the committed page is what :func:`render` writes.
"""

from __future__ import annotations

import json
import sys
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from schemas import config

HEADER = """\
# Configuration

<!-- Generated from schemas/config.py: `python -m tally.devstack.configdoc >
docs/configuration.md`. Edit the models' descriptions, not this page. -->

One typed object (`schemas/config.py`, a pydantic-settings model), built from defaults, then a TOML
file (`--config FILE` or `TALLY_CONFIG`), then environment variables, then command-line flags
(`--state-dir`). Environment variables are `TALLY_<KEY>` for top-level keys and
`TALLY_<SECTION>__<KEY>` for the rest (`TALLY_KAFKA__TOPIC=x`; a list is comma-separated:
`TALLY_EVENTS__TYPES=view,like`; a boolean is `true`/`false`, `yes`/`no`, `on`/`off` or `1`/`0`).

The config is checked when it is built, and a command refuses to start with a message that names
the key: a key in the file that names no setting (`kafka.topik: unknown config key (did you mean
topic?)`), a wrong type (in the file, `"6"` is no integer) or a value out of range
(`kafka.partitions: must be > 0`; a value from the environment says which variable set it). A
`TALLY_*` environment variable that names no setting never breaks a command: it is reported once,
as a warning that names it (`TALLY_KAFKA__TOPICC: names no setting, ignored; did you mean
TALLY_KAFKA__TOPIC?`). `TALLY_CONFIG` and `TALLY_HOME` (the checkout the scheduled jobs run from,
infra/schedule) are Tally's own variables that carry no setting.

A *duration* is a number and a unit: `500 ms`, `2s`, `10 minutes`, `1 hour`, `30 days`. A *size*
is a number of megabytes or gigabytes: `512m`, `2g`. Secrets (`lake.s3_secret_key`,
`serve.api_keys`) belong in the environment or a file only its owner reads; never commit them.

```toml
state_dir = ".tally"
[kafka]
bootstrap_servers = "127.0.0.1:9092"
topic = "tally.events"
[lake]
uri = "s3a://my-bucket/tally"   # "" = file://<state_dir>/lake
[batch]
lateness = "15 minutes"
```
"""

_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}
_BOUND_SIGNS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _metadata_of(annotation: Any) -> tuple[Any, list]:
    if typing.get_origin(annotation) is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        return base, list(meta)
    return annotation, []


def type_name(field: FieldInfo) -> str:
    rule = config.rule_of(field.metadata)
    if rule.kind:
        return rule.kind
    ann = field.annotation
    if typing.get_origin(ann) is Literal:
        return "string"
    if typing.get_origin(ann) is tuple:
        return "list of strings"
    return _TYPES.get(ann, getattr(ann, "__name__", str(ann)))


def default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _bounds_text(metadata: list) -> list[str]:
    out = []
    for m in metadata:
        for name, sign in _BOUND_SIGNS:
            if getattr(m, name, None) is not None:
                out.append(f"{sign} {getattr(m, name)}")
    return out


def limits_text(field: FieldInfo) -> str:
    """The field's declared limits in words: bounds, the rule's text (a pattern's meaning), the
    choices of a Literal, what each item of a list must be."""
    rule = config.rule_of(field.metadata)
    # A rule's text says the whole limit (it replaces the bounds' wording in errors too).
    parts = [rule.text] if rule.text else [" and ".join(_bounds_text(field.metadata))]
    parts = [p for p in parts if p]
    ann = field.annotation
    if typing.get_origin(ann) is Literal:
        parts.append("one of " + ", ".join(str(a) for a in typing.get_args(ann)))
    if typing.get_origin(ann) is tuple:
        _, item_meta = _metadata_of(typing.get_args(ann)[0])
        item_rule = config.rule_of(item_meta)
        if item_rule.text:
            parts.append(item_rule.text if item_rule.text.startswith("each")
                         else f"each {item_rule.text}")
    text = "; ".join(parts)
    if rule.why and text:
        text += f" ({rule.why})"
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(model: type[BaseModel], names: list[str]) -> list[str]:
    lines = ["| key | type | default | limits | description |", "|---|---|---|---|---|"]
    for name in names:
        f = model.model_fields[name]
        default = f.get_default(call_default_factory=True)
        lines.append("| " + " | ".join(_cell(c) for c in (
            f"`{name}`", type_name(f), f"`{default_text(default)}`", limits_text(f),
            f.description or "")) + " |")
    return lines


def _rules(model: type[BaseModel]) -> list[str]:
    """The model validators' docstrings: the rules that join keys."""
    found = []
    for dec in model.__pydantic_decorators__.model_validators.values():
        doc = " ".join((dec.func.__doc__ or "").split())
        if doc:
            found.append(f"- {doc}")
    return found


def _doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())


def render() -> str:
    """The whole of docs/configuration.md."""
    out = [HEADER]
    top = [n for n in config.TallyConfig.model_fields if n not in config.sections()]
    out += ["## Top level", "", "Environment: `TALLY_<KEY>`.", ""]
    out += _table(config.TallyConfig, top)
    rules = _rules(config.TallyConfig)
    if rules:
        out += ["", "Rules across sections:", "", *rules]
    for name, section in config.sections().items():
        out += ["", f"## [{name}]", "", _doc(section), "",
                f"Environment: `TALLY_{name.upper()}__<KEY>`.", ""]
        out += _table(section, list(section.model_fields))
        rules = _rules(section)
        if rules:
            out += ["", "Rules across keys:", "", *rules]
    return "\n".join(out) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
