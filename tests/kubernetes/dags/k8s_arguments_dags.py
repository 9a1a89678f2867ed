"""Pod tasks taking positional arguments, mapped, or misusing the runtime (used by
tests/kubernetes/test_pod_arguments_and_mapping.py with a fake Kubernetes API)."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from airflow_repro import repro_task, runtime
from airflow_repro.airflow.kubernetes import ReproKubernetesPodOperator

IMAGE = "registry.test/acme/train:1.0@sha256:" + "4f" * 32
POD = {"namespace": "ml"}
SECRET_URL = "https://trainer:hunter2-never-recorded@db.example/features"
RETRIES = {"retries": 2, "retry_delay": timedelta(seconds=0)}


@dag(dag_id="k8s_positional", schedule=None)
def k8s_positional():
    @task
    def numbers() -> list:
        return [1, 2, 3]

    @repro_task.kubernetes(image=IMAGE, kubernetes=POD, outputs=["sum.json"], seed=1)
    def add(numbers: list, offset: int, source: str, scale: int = 1):
        import json

        ctx = runtime.current()
        total = (sum(numbers) + offset) * scale
        real = source.startswith("https://trainer:hunter2")
        ctx.output_path("sum.json").write_text(json.dumps({"total": total, "source_is_real": real}))

    add(numbers(), 10, SECRET_URL, scale=2)


@dag(dag_id="k8s_mapped", schedule=None)
def k8s_mapped():
    @repro_task.kubernetes(image=IMAGE, kubernetes=POD, outputs=["parts/{map_index}.txt"], seed=1)
    def part(n: int):
        ctx = runtime.current()
        ctx.output_path("parts/{map_index}.txt").write_text(f"{n} at {ctx.map_index}")

    part.expand(n=[5, 6])


@dag(dag_id="k8s_runtime_misuse", schedule=None, default_args=RETRIES)
def k8s_runtime_misuse():
    @repro_task.kubernetes(image=IMAGE, kubernetes=POD, outputs=["declared.txt"], seed=1)
    def misuses():
        runtime.current().output_path("undeclared.txt").write_text("x")

    misuses()
    # A plain image task: its own program, no run_callable around it.
    ReproKubernetesPodOperator(
        task_id="script_misuses",
        image=IMAGE,
        namespace="ml",
        outputs=["out/ok.txt"],
        seed=1,
        cmds=["python", "-c"],
        arguments=["from airflow_repro import runtime; runtime.current().output_path('elsewhere.txt')"],
    )


k8s_positional()
k8s_mapped()
k8s_runtime_misuse()
