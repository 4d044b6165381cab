"""infra/schedule/tally_batch_dag.py, loaded against small stand-ins for Airflow's modules (Airflow
is not a dependency of Tally): its imports work with Airflow 3's module names and with Airflow 2's,
its nightly task runs the nightly form, and its audit task audits the day the run is for — its
templates rendered with Jinja (as Airflow renders them: sandboxed, undefined names strict) for the
contexts Airflow 2 and Airflow 3 give scheduled and manual runs, and for a backfill's ``date``.

The expected days are written out, not computed with the DAG's own function."""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
import sys
import types
from pathlib import Path

import jinja2
import pytest
from jinja2.sandbox import SandboxedEnvironment

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "infra" / "schedule" / "tally_batch_dag.py"
UTC = dt.timezone.utc


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


class _Stubs:
    """Stand-ins for the parts of Airflow the DAG file uses, recording what it does with them."""

    def __init__(self, version: int):
        self.version = version
        self.dags: list = []
        self.variables: list[tuple] = []
        stubs = self

        class DAG:
            current = None

            def __init__(self, **kwargs):
                self.kwargs = kwargs
                self.tasks = []
                stubs.dags.append(self)

            def __enter__(self):
                DAG.current = self
                return self

            def __exit__(self, *exc):
                DAG.current = None
                return False

        class BashOperator:
            def __init__(self, *, task_id, bash_command, **kwargs):
                assert DAG.current is not None, "a task outside the DAG's with block"
                self.task_id, self.bash_command, self.kwargs = task_id, bash_command, kwargs
                self.downstream = []
                DAG.current.tasks.append(self)

            def __rshift__(self, other):
                self.downstream.append(other)
                return other

        class Param:
            def __init__(self, default=None, description=None, **schema):
                self.default, self.description, self.schema = default, description, schema

        notset = object()
        if version == 3:
            class Variable:  # airflow.sdk.Variable.get's signature
                @classmethod
                def get(cls, key, default=notset, deserialize_json=False):
                    assert default is not notset, f"Variable {key} read without a default"
                    stubs.variables.append((key, default))
                    return default
        else:
            class Variable:  # airflow.models.Variable.get's signature
                @classmethod
                def get(cls, key, default_var=notset, deserialize_json=False):
                    assert default_var is not notset, f"Variable {key} read without a default"
                    stubs.variables.append((key, default_var))
                    return default_var

        self.DAG, self.BashOperator, self.Param, self.Variable = DAG, BashOperator, Param, Variable

    def modules(self) -> dict[str, types.ModuleType]:
        def module(name, **attrs):
            m = types.ModuleType(name)
            m.__path__ = []  # a package: its other submodules are then not found
            m.__dict__.update(attrs)
            return m

        if self.version == 3:
            return {
                "airflow": module("airflow"),
                "airflow.sdk": module("airflow.sdk", DAG=self.DAG, Param=self.Param,
                                      Variable=self.Variable),
                "airflow.providers": module("airflow.providers"),
                "airflow.providers.standard": module("airflow.providers.standard"),
                "airflow.providers.standard.operators":
                    module("airflow.providers.standard.operators"),
                "airflow.providers.standard.operators.bash":
                    module("airflow.providers.standard.operators.bash",
                           BashOperator=self.BashOperator),
            }
        return {
            "airflow": module("airflow", DAG=self.DAG),
            "airflow.models": module("airflow.models", Variable=self.Variable),
            "airflow.models.param": module("airflow.models.param", Param=self.Param),
            "airflow.operators": module("airflow.operators"),
            "airflow.operators.bash": module("airflow.operators.bash",
                                             BashOperator=self.BashOperator),
        }


def load_dag(monkeypatch, version: int):
    """The DAG file run as Airflow's parser runs it, with only one version's module names."""
    for name in list(sys.modules):
        if name == "airflow" or name.startswith("airflow."):
            monkeypatch.delitem(sys.modules, name)
    stubs = _Stubs(version)
    for name, module in stubs.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location(f"tally_batch_dag_af{version}", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (dag,) = stubs.dags
    return stubs, dag, {t.task_id: t for t in dag.tasks}


@pytest.fixture(params=[2, 3], ids=["airflow2", "airflow3"])
def loaded(request, monkeypatch):
    return load_dag(monkeypatch, request.param)


def render(dag, command: str, context: dict) -> str:
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined)
    env.globals.update(dag.kwargs["user_defined_macros"])
    return env.from_string(command).render(**context)


def _param_defaults(dag) -> dict:
    return {name: p.default for name, p in dag.kwargs["params"].items()}


def af2_scheduled(run_at: dt.datetime, dag) -> dict:
    """Airflow 2, CronDataIntervalTimetable: the run at a tick covers the day of ticks before it."""
    start = run_at - dt.timedelta(days=1)
    return {"data_interval_start": start, "data_interval_end": run_at, "logical_date": start,
            "dag_run": types.SimpleNamespace(conf={}), "params": _param_defaults(dag)}


def af3_scheduled(run_at: dt.datetime, dag) -> dict:
    """Airflow 3, CronTriggerTimetable: a zero-width interval at the tick."""
    return {"data_interval_start": run_at, "data_interval_end": run_at, "logical_date": run_at,
            "dag_run": types.SimpleNamespace(conf={}, run_after=run_at),
            "params": _param_defaults(dag)}


def af2_manual(triggered: dt.datetime, last_tick: dt.datetime, dag, conf=None) -> dict:
    """Airflow 2: the logical date is the trigger time, the interval the last complete one."""
    return {"data_interval_start": last_tick - dt.timedelta(days=1),
            "data_interval_end": last_tick, "logical_date": triggered,
            "dag_run": types.SimpleNamespace(conf=conf or {}),
            "params": {**_param_defaults(dag), **(conf or {})}}


def af3_manual(triggered: dt.datetime, dag, conf=None, logical_date=True) -> dict:
    """Airflow 3: with a logical date, the interval [t, t]; without one, no interval, no
    logical date in the context at all, only the run's run_after."""
    context = {"dag_run": types.SimpleNamespace(conf=conf or {}, run_after=triggered),
               "params": {**_param_defaults(dag), **(conf or {})}}
    if logical_date:
        context.update(data_interval_start=triggered, data_interval_end=triggered,
                       logical_date=triggered)
    return context


def audited(dag, tasks, context) -> str:
    command = render(dag, tasks["audit"].bash_command, context)
    (day,) = re.findall(r"tally audit --date (\S+) --json$", command)
    return day


# --- the DAG as Airflow sees it ------------------------------------------------------------------


def test_the_dag_imports_with_airflow_3_names_only(monkeypatch):
    stubs, dag, tasks = load_dag(monkeypatch, 3)
    assert all(isinstance(t, stubs.BashOperator) for t in tasks.values())
    assert isinstance(dag.kwargs["params"]["date"], stubs.Param)
    assert stubs.variables == [("tally_home", "/opt/tally"), ("tally_spark_master", "local[*]")]


def test_the_dag_imports_with_airflow_2_names_only(monkeypatch):
    stubs, dag, tasks = load_dag(monkeypatch, 2)
    assert all(isinstance(t, stubs.BashOperator) for t in tasks.values())
    assert isinstance(dag.kwargs["params"]["date"], stubs.Param)
    assert stubs.variables == [("tally_home", "/opt/tally"), ("tally_spark_master", "local[*]")]


def test_the_dag_runs_nightly_at_0230_utc_then_the_audit(loaded):
    _, dag, tasks = loaded
    assert dag.kwargs["dag_id"] == "tally_nightly_batch"
    assert dag.kwargs["schedule"] == "30 2 * * *"
    assert dag.kwargs["catchup"] is False
    assert dag.kwargs["start_date"].utcoffset() == dt.timedelta(0)
    assert set(tasks) == {"nightly", "audit"}
    assert tasks["nightly"].downstream == [tasks["audit"]]
    assert "date -u" not in tasks["audit"].bash_command  # no wall clock
    assert "audit_day(data_interval_end" in tasks["audit"].bash_command


def test_the_date_param_takes_only_a_day(loaded):
    _, dag, _ = loaded
    param = dag.kwargs["params"]["date"]
    assert param.default is None and "null" in param.schema["type"]
    schema = param.schema

    def valid(value):  # JSON Schema's pattern (a search) and length bounds
        return (bool(re.search(schema["pattern"], value))
                and schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 1e9))

    assert valid("2026-10-03")
    for bad in ["2026-10-03; rm -rf ~", "2026-10-3", "yesterday", "2026-10-03\n",
                "２０２６-10-03"]:
        assert not valid(bad), bad


# --- the nightly task ----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [af2_scheduled, af3_scheduled])
def test_a_scheduled_run_is_the_nightly_form(loaded, make):
    _, dag, tasks = loaded
    command = render(dag, tasks["nightly"].bash_command, make(utc(2026, 11, 15, 2, 30), dag))
    assert command.endswith("spark-submit --master local[*] --jars \"$(.venv/bin/tally jars)\" "
                            "jobs/batch.py --json"), command
    assert "--date" not in command
    assert command.startswith("cd /opt/tally && ")


def test_a_manual_run_without_a_date_is_the_nightly_form(loaded):
    _, dag, tasks = loaded
    for context in [af2_manual(utc(2026, 11, 15, 9), utc(2026, 11, 15, 2, 30), dag),
                    af3_manual(utc(2026, 11, 15, 9), dag),
                    af3_manual(utc(2026, 11, 15, 9), dag, logical_date=False)]:
        command = render(dag, tasks["nightly"].bash_command, context)
        assert command.endswith("jobs/batch.py --json") and "--date" not in command, command


# --- the audited day -----------------------------------------------------------------------------


def test_airflow_2_scheduled_runs_audit_the_day_before_the_run(loaded):
    _, dag, tasks = loaded
    # The run at 2026-11-15 02:30: interval [11-14 02:30, 11-15 02:30], logical date 11-14.
    assert audited(dag, tasks, af2_scheduled(utc(2026, 11, 15, 2, 30), dag)) == "2026-11-14"
    assert audited(dag, tasks, af2_scheduled(utc(2027, 1, 1, 2, 30), dag)) == "2026-12-31"
    assert audited(dag, tasks, af2_scheduled(utc(2028, 3, 1, 2, 30), dag)) == "2028-02-29"


def test_airflow_3_scheduled_runs_audit_the_day_before_the_run(loaded):
    _, dag, tasks = loaded
    # The run at 2026-11-15 02:30: interval [11-15 02:30, 11-15 02:30], logical date 11-15.
    assert audited(dag, tasks, af3_scheduled(utc(2026, 11, 15, 2, 30), dag)) == "2026-11-14"
    assert audited(dag, tasks, af3_scheduled(utc(2027, 1, 1, 2, 30), dag)) == "2026-12-31"
    assert audited(dag, tasks, af3_scheduled(utc(2028, 3, 1, 2, 30), dag)) == "2028-02-29"


def test_airflow_2_manual_runs_audit_the_last_scheduled_day(loaded):
    _, dag, tasks = loaded
    # Triggered at 11-15 10:00: the inferred interval ends at the 11-15 02:30 tick.
    assert audited(dag, tasks, af2_manual(utc(2026, 11, 15, 10), utc(2026, 11, 15, 2, 30),
                                          dag)) == "2026-11-14"
    # At 23:59, the same tick.
    assert audited(dag, tasks, af2_manual(utc(2026, 11, 15, 23, 59), utc(2026, 11, 15, 2, 30),
                                          dag)) == "2026-11-14"
    # At 01:00, before the day's tick: the interval ends at 11-14 02:30.
    assert audited(dag, tasks, af2_manual(utc(2026, 11, 15, 1), utc(2026, 11, 14, 2, 30),
                                          dag)) == "2026-11-13"


@pytest.mark.parametrize("logical_date", [True, False], ids=["logical-date", "no-logical-date"])
def test_airflow_3_manual_runs_audit_the_last_scheduled_day(loaded, logical_date):
    _, dag, tasks = loaded

    def day(triggered):
        return audited(dag, tasks, af3_manual(triggered, dag, logical_date=logical_date))

    assert day(utc(2026, 11, 15, 10)) == "2026-11-14"
    assert day(utc(2026, 11, 15, 23, 59)) == "2026-11-14"
    assert day(utc(2026, 11, 15, 2, 30)) == "2026-11-14"  # at the tick itself
    assert day(utc(2026, 11, 15, 2, 29, 59)) == "2026-11-13"
    assert day(utc(2026, 11, 15, 1)) == "2026-11-13"  # before the day's tick
    assert day(utc(2026, 1, 1, 0, 15)) == "2025-12-30"


def test_the_audited_day_is_a_utc_day(loaded):
    _, dag, tasks = loaded
    # 03:30 at UTC+1 is the 02:30 UTC tick; 01:00 at UTC-5 is 06:00 UTC.
    plus_one = dt.datetime(2026, 11, 15, 3, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    minus_five = dt.datetime(2026, 11, 15, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert audited(dag, tasks, af3_scheduled(plus_one, dag)) == "2026-11-14"
    assert audited(dag, tasks, af3_manual(minus_five, dag)) == "2026-11-14"


# --- a backfill ----------------------------------------------------------------------------------


def test_a_backfill_batches_and_audits_the_day_it_names(loaded):
    _, dag, tasks = loaded
    conf = {"date": "2026-10-03"}
    for context in [af2_manual(utc(2026, 11, 15, 9), utc(2026, 11, 15, 2, 30), dag, conf),
                    af3_manual(utc(2026, 11, 15, 9), dag, conf),
                    af3_manual(utc(2026, 11, 15, 1), dag, conf, logical_date=False)]:
        nightly = render(dag, tasks["nightly"].bash_command, context)
        assert nightly.endswith("jobs/batch.py --date 2026-10-03 --json"), nightly
        assert "--force" not in nightly
        assert audited(dag, tasks, context) == "2026-10-03"


@pytest.mark.parametrize("value", ["2026-10-03; rm -rf ~", "2026-13-01", "$(id)", 20261003])
def test_a_backfill_date_that_is_not_a_day_fails_the_task(loaded, value):
    _, dag, tasks = loaded
    context = af3_manual(utc(2026, 11, 15, 9), dag, {"date": value})
    for task in tasks.values():
        with pytest.raises(ValueError):
            render(dag, task.bash_command, context)
