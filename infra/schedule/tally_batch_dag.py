"""Airflow DAG of Tally's nightly run: one task running the nightly form of the batch job
(``jobs/batch.py`` without ``--date``: yesterday once it is closed, every closed pending day of
any age, compaction), then the audit of yesterday.

The job decides which days to compute from the archive's index and the publication log, never
from the DAG run's logical date: under Airflow 2 and 3 alike, and for a manual trigger, it never
computes a day that is still open (it says why and exits 0). Backfilling history is
``jobs/batch.py --from D1 --to D2`` (``tally reprocess``), not ``airflow dags backfill``.

Copy into the Airflow ``dags/`` folder. It runs the batch job with ``spark-submit`` on the
cluster named by the ``tally_spark_master`` Airflow Variable (default ``local[*]``); set the
``tally_home`` Variable to the Tally checkout and pass ``TALLY_*`` settings through the
workers' environment (no credentials in this file).
"""

from __future__ import annotations

import datetime as dt

from airflow import DAG
from airflow.models import Variable
from airflow.operators.bash import BashOperator

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
    nightly = BashOperator(task_id="nightly", bash_command=f"{submit} --json")
    # The audit of the day before the wall clock's today (not the logical date).
    audit = BashOperator(task_id="audit", bash_command=(
        f"cd {home} && .venv/bin/tally audit --date \"$(date -u -d yesterday +%F)\" --json"))
    nightly >> audit
