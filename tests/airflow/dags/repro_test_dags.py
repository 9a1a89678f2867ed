"""DAGs that exercise the record path's edge cases (used by tests/airflow)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import dag

from airflow_repro import Input, repro_task, runtime


@dag(dag_id="repro_failing", schedule=None)
def repro_failing():
    @repro_task(outputs=["partial.txt"], seed=1)
    def writes_then_fails():
        runtime.current().output_path("partial.txt").write_text("half-written")
        raise RuntimeError("boom after writing")

    writes_then_fails()


@dag(dag_id="repro_retry", schedule=None, default_args={"retries": 1, "retry_delay": timedelta(seconds=0)})
def repro_retry():
    @repro_task(outputs=["out.txt"], seed=1)
    def stable_output():
        runtime.current().output_path("out.txt").write_text("same bytes every try")

    stable_output()


@dag(dag_id="repro_bad_input", schedule=None)
def repro_bad_input():
    @repro_task(inputs={"missing": Input("nowhere/data.csv")}, outputs=["x.txt"], seed=1)
    def reads_missing():
        Path(os.environ["REPRO_TEST_SIDE_EFFECT"]).write_text("the task ran")

    reads_missing()


@dag(dag_id="repro_lockfile", schedule=None)
def repro_lockfile():
    @repro_task(outputs=["env.json"], lockfile="lockfiles/six.lock", seed=3)
    def in_pinned_venv(greeting: str):
        import importlib.util
        import json
        import random
        import sys

        import six

        from airflow_repro import runtime

        ctx = runtime.current()
        with ctx.open_output("env.json", "w") as handle:
            json.dump(
                {
                    "six": six.__version__,
                    "airflow_importable": importlib.util.find_spec("airflow") is not None,
                    "prefix": sys.prefix,
                    "seed": ctx.seed,
                    "first_random": random.random(),
                    "greeting": greeting,
                },
                handle,
            )
        ctx.log_metric("answer", 42)
        return {"ok": True}

    in_pinned_venv(greeting="hello")


repro_failing()
repro_retry()
repro_bad_input()
repro_lockfile()


@dag(dag_id="repro_nondeterministic", schedule=None)
def repro_nondeterministic():
    @repro_task(outputs=["noise.bin", "stable.txt"], seed=5)
    def unseeded():
        ctx = runtime.current()
        ctx.output_path("noise.bin").write_bytes(os.urandom(32))  # not governed by the seed
        ctx.output_path("stable.txt").write_text("always the same")

    unseeded()


repro_nondeterministic()


@dag(dag_id="repro_runtime_misuse", schedule=None, default_args={"retries": 2, "retry_delay": timedelta(seconds=0)})
def repro_runtime_misuse():
    @repro_task(outputs=["declared.txt"], seed=1)
    def writes_undeclared():
        runtime.current().output_path("not-declared.txt").write_text("x")  # RuntimeContextError

    writes_undeclared()


repro_runtime_misuse()


@dag(dag_id="repro_conf_secret", schedule=None)
def repro_conf_secret():
    @repro_task(outputs=["token_digest.txt"], seed=1)
    def uses_token(dag_run=None):
        import hashlib

        token = dag_run.conf["api_token"]
        runtime.current().output_path("token_digest.txt").write_text(hashlib.sha256(token.encode()).hexdigest())

    uses_token()


repro_conf_secret()
