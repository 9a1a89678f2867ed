"""DAGs whose recorded tasks take positional arguments, are mapped, or misuse the runtime (used by
tests/airflow/test_arguments_and_mapping.py)."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import dag, task

from airflow_repro import repro_task, runtime

SECRET_URL = "https://trainer:hunter2-never-recorded@db.example/features"
RETRIES = {"retries": 2, "retry_delay": timedelta(seconds=0)}


def _note_attempt(name: str) -> None:
    """Append a line per attempt to the file $REPRO_TEST_ATTEMPTS names (when set)."""
    target = os.environ.get("REPRO_TEST_ATTEMPTS")
    if target:
        with Path(target).open("a", encoding="utf-8") as handle:
            handle.write(f"{name}\n")


@dag(dag_id="repro_positional", schedule=None)
def repro_positional():
    @task
    def features() -> dict:
        return {"rows": 3, "columns": ["a", "b"]}

    @repro_task(outputs=["model.json"], seed=2)
    def train(features: dict, source: str, epochs: int = 1):
        with runtime.current().open_output("model.json", "w") as handle:
            json.dump({"features": features, "source_is_real": source == SECRET_URL, "epochs": epochs}, handle)

    train(features(), SECRET_URL, epochs=4)


@dag(dag_id="repro_positional_lockfile", schedule=None)
def repro_positional_lockfile():
    @task
    def greeting() -> str:
        return "hello from upstream"

    @repro_task(outputs=["args.json"], lockfile="lockfiles/six.lock", seed=3)
    def in_venv(greeting: str, count: int, shout: bool = False):
        import json

        from airflow_repro import runtime

        text = greeting.upper() if shout else greeting
        with runtime.current().open_output("args.json", "w") as handle:
            json.dump({"greeting": text, "count": count}, handle)
        return {"greeting": text, "count": count}

    in_venv(greeting(), 2, shout=True)


@dag(dag_id="repro_mapped", schedule=None)
def repro_mapped():
    @repro_task(outputs=["shards/{map_index}.txt"], seed=4)
    def shard(n: int):
        ctx = runtime.current()
        ctx.output_path(f"shards/{ctx.map_index}.txt").write_text(f"shard of {n} at index {ctx.map_index}")

    shard.expand(n=[10, 20, 30])


@dag(dag_id="repro_mapped_clash", schedule=None)
def repro_mapped_clash():
    @repro_task(outputs=["shard.txt"], seed=4)
    def shard(n: int):
        _note_attempt(f"shard {n}")
        runtime.current().output_path("shard.txt").write_text(str(n))

    shard.expand(n=[1, 2])


@dag(dag_id="repro_runtime_misuse_wrapped", schedule=None, default_args=RETRIES)
def repro_runtime_misuse_wrapped():
    @repro_task(outputs=["declared.txt"], seed=1)
    def wraps_the_misuse():
        _note_attempt("wraps_the_misuse")
        try:
            runtime.current().output_path("not-declared.txt").write_text("x")
        except runtime.RuntimeContextError as exc:
            raise ValueError("could not write the report") from exc  # still a misuse: not retried

    wraps_the_misuse()


@dag(dag_id="repro_runtime_misuse_in_venv", schedule=None, default_args=RETRIES)
def repro_runtime_misuse_in_venv():
    @repro_task(outputs=["declared.txt"], lockfile="lockfiles/six.lock", seed=1)
    def misuses_in_venv(attempts: str):
        from pathlib import Path

        from airflow_repro import runtime

        with Path(attempts).open("a", encoding="utf-8") as handle:
            handle.write("misuses_in_venv\n")
        runtime.current().output_path("not-declared.txt").write_text("x")

    misuses_in_venv(os.environ.get("REPRO_TEST_ATTEMPTS", "/dev/null"))


repro_positional()
repro_positional_lockfile()
repro_mapped()
repro_mapped_clash()
repro_runtime_misuse_wrapped()
repro_runtime_misuse_in_venv()
