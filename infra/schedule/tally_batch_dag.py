"""Airflow DAG of Tally's nightly run: at 02:30 UTC, one task running the nightly form of the
batch job (``jobs/batch.py`` without ``--date``: yesterday once it is closed, every closed pending
day of any age, compaction), then the audit of the day the run is for.

The job decides which days to compute from the archive's index and the publication log, never
from the DAG run's dates: under Airflow 2 and 3 alike, and for a manual trigger, it never
computes a day that is still open (it says why and exits 0).

The audited day comes from the run's data interval, not from the wall clock: it is the UTC day
before the last 02:30 UTC tick at or before ``data_interval_end`` (``audit_day``). That is the same
day for Airflow 2's default cron timetable (a run at 02:30 on day D has the interval
[D-1 02:30, D 02:30]) and Airflow 3's (interval [D 02:30, D 02:30]), and for manual runs: a
trigger at any time of day D after 02:30 audits D-1, one before 02:30 audits D-2 (the latest day
a scheduled run has audited). An Airflow 3 manual run without a logical date has no data interval;
its ``run_after`` (the trigger time) stands in for the interval's end.

Backfilling one day: trigger the DAG with the ``date`` param (``{"date": "YYYY-MM-DD"}`` as the
run's conf, or the trigger form's field): the nightly task then runs ``jobs/batch.py --date D``
(which refuses a day that is not closed) and the audit audits D. A run without it is the
nightly form. Recomputing a range is ``jobs/batch.py --from D1 --to D2`` (``tally reprocess``),
not ``airflow dags backfill``.

Copy into the Airflow ``dags/`` folder. It runs the batch job with ``spark-submit`` on the
cluster named by the ``tally_spark_master`` Airflow Variable (default ``local[*]``); set the
``tally_home`` Variable to the Tally checkout and pass ``TALLY_*`` settings through the
workers' environment (no credentials in this file).
"""

from __future__ import annotations

import datetime as dt
import re

try:  # Airflow 3: the Task SDK
    from airflow.sdk import DAG, Param, Variable
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.models import Variable
    from airflow.models.param import Param
try:  # Airflow 3 (and Airflow 2 with the standard provider)
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

TICK = dt.time(2, 30)  # the schedule's time of day, UTC
SCHEDULE = f"{TICK.minute} {TICK.hour} * * *"
DAY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def audit_day(data_interval_end: dt.datetime) -> dt.date:
    """The day a run audits: the UTC day before the last 02:30 UTC tick at or before
    ``data_interval_end`` (a naive datetime is taken as UTC)."""
    end = data_interval_end
    if end.tzinfo is None:
        end = end.replace(tzinfo=dt.timezone.utc)
    end = dt.datetime.fromtimestamp(end.timestamp(), dt.timezone.utc)
    tick_day = end.date() if end.time() >= TICK else end.date() - dt.timedelta(days=1)
    return tick_day - dt.timedelta(days=1)


def backfill_day(value: str) -> dt.date:
    """The day a manual run's ``date`` param names (``YYYY-MM-DD``); anything else is an error,
    so that nothing but a date reaches the shell."""
    if not isinstance(value, str) or not re.fullmatch(DAY_PATTERN, value):
        raise ValueError(f"date: {value!r} is not a day (YYYY-MM-DD)")
    return dt.date.fromisoformat(value)


# Jinja: the run's end, or (Airflow 3, a manual run without a logical date) its trigger time.
RUN_END = ("data_interval_end if data_interval_end is defined and data_interval_end "
           "else dag_run.run_after")
# The nightly form unless the run names a day to backfill.
BATCH_ARGS = "{% if params.date %} --date {{ backfill_day(params.date) }}{% endif %} --json"
AUDIT_DATE = ("{% if params.date %}{{ backfill_day(params.date) }}"
              "{% else %}{{ audit_day(" + RUN_END + ") }}{% endif %}")

with DAG(
    dag_id="tally_nightly_batch",
    schedule=SCHEDULE,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=10)},
    params={"date": Param(None, type=["null", "string"], pattern=DAY_PATTERN, minLength=10,
                          maxLength=10,
                          description="one closed UTC day to batch and audit (YYYY-MM-DD); "
                                      "empty: the nightly run")},
    user_defined_macros={"audit_day": audit_day, "backfill_day": backfill_day},
    tags=["tally"],
) as dag:
    # The default is passed positionally: Airflow 2 names it default_var, Airflow 3 default.
    home = Variable.get("tally_home", "/opt/tally")
    master = Variable.get("tally_spark_master", "local[*]")
    # The driver and executors run Tally's virtualenv (on a cluster: shipped as a packed
    # virtualenv with --archives, see the README's cluster section).
    submit = (f"cd {home} && PYSPARK_PYTHON={home}/.venv/bin/python PYTHONPATH={home} "
              f"spark-submit --master {master} --jars \"$(.venv/bin/tally jars)\" jobs/batch.py")
    nightly = BashOperator(task_id="nightly", bash_command=submit + BATCH_ARGS)
    audit = BashOperator(task_id="audit", bash_command=(
        f"cd {home} && .venv/bin/tally audit --date " + AUDIT_DATE + " --json"))
    nightly >> audit
