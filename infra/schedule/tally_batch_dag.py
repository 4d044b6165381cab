"""Airflow DAG of Tally's nightly batch: yesterday and the days before it that late events may
still change (``batch.max_lag_days``), one task per day so each is retried on its own, then the
audit of yesterday.

Copy into the Airflow ``dags/`` folder. It runs the batch job with ``spark-submit`` on the
cluster named by the ``tally_spark_master`` Airflow Variable (default ``local[*]``); set the
``tally_home`` Variable to the Tally checkout and pass ``TALLY_*`` settings through the
workers' environment (no credentials in this file). Each day's task uses the DAG run's logical
date, so backfills (``airflow dags backfill``) recompute history day by day.
"""

from __future__ import annotations

import datetime as dt

from airflow import DAG
from airflow.models import Variable
from airflow.operators.bash import BashOperator

MAX_LAG_DAYS = 3

with DAG(
    dag_id="tally_nightly_batch",
    schedule="30 2 * * *",
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=10)},
    tags=["tally"],
) as dag:
    home = Variable.get("tally_home", default_var="/opt/tally")
    master = Variable.get("tally_spark_master", default_var="local[*]")
    # The driver and executors run Tally's virtualenv (on a cluster: shipped as a packed
    # virtualenv with --archives, see the README's cluster section).
    submit = (f"cd {home} && PYSPARK_PYTHON={home}/.venv/bin/python PYTHONPATH={home} "
              f"spark-submit --master {master} --jars \"$(.venv/bin/tally jars)\" jobs/batch.py")
    days = []
    for back in range(MAX_LAG_DAYS, 0, -1):
        # ds is the logical date (the day before the run); back=1 is that day itself.
        day = "{{ macros.ds_add(ds, %d) }}" % (1 - back)
        days.append(BashOperator(task_id=f"batch_day_minus_{back}",
                                 bash_command=f"{submit} --date {day}"))
    audit = BashOperator(task_id="audit",
                         bash_command=f"cd {home} && .venv/bin/tally audit --date {{{{ ds }}}} --json")
    for earlier, later in zip(days, days[1:]):
        earlier >> later
    days[-1] >> audit
