"""DAGs whose tasks run in pods (used by tests/kubernetes with a fake Kubernetes API)."""

from __future__ import annotations

import os

from airflow.providers.cncf.kubernetes.secret import Secret
from airflow.sdk import dag

from airflow_repro import Input, repro_task, runtime
from airflow_repro.airflow.kubernetes import ReproKubernetesPodOperator

IMAGE = "registry.test/acme/train:1.0@sha256:" + "4f" * 32
POD = {"namespace": "ml", "secrets": [Secret("env", "API_TOKEN", "train-secrets", "token")]}


@dag(dag_id="k8s_record", schedule=None, params={"scale": 3})
def k8s_record():
    @repro_task.kubernetes(
        image=IMAGE,
        kubernetes=POD,
        outputs=["data/numbers.txt"],
        seed=11,
        resources={"cpu": "1", "memory": "1Gi", "gpu": 1, "accelerator": "h100"},
    )
    def produce(params=None):
        import os
        import random

        ctx = runtime.current()
        assert os.environ["API_TOKEN"], "the secret reaches the pod as an environment variable"
        numbers = [random.randint(0, 100) * params["scale"] for _ in range(5)]
        ctx.output_path("data/numbers.txt").write_text(" ".join(map(str, numbers)))
        ctx.log_metric("count", len(numbers))

    @repro_task.kubernetes(
        image=IMAGE,
        kubernetes={"namespace": "ml"},
        inputs={"numbers": Input("data/numbers.txt")},
        outputs=["data/total.txt"],
        seed=11,
    )
    def total():
        import sys

        ctx = runtime.current()
        assert "airflow" not in sys.modules and "pydantic" not in sys.modules
        numbers = [int(n) for n in ctx.input_path("numbers").read_text().split()]
        ctx.output_path("data/total.txt").write_text(str(sum(numbers)))

    produce() >> total()


@dag(dag_id="k8s_operator", schedule=None)
def k8s_operator():
    # A plain image task: its own command, which calls the runtime itself.
    ReproKubernetesPodOperator(
        task_id="script",
        image=IMAGE,
        namespace="ml",
        outputs=["out/hello.txt"],
        seed=5,
        cmds=["python", "-c"],
        arguments=[
            "from airflow_repro import runtime; "
            "runtime.current().output_path('out/hello.txt').write_text('hello from the pod')"
        ],
    )


@dag(dag_id="k8s_failing", schedule=None)
def k8s_failing():
    @repro_task.kubernetes(image=IMAGE, kubernetes={"namespace": "ml"}, outputs=["half.txt"], seed=1)
    def breaks():
        runtime.current().output_path("half.txt").write_text("half-written")
        raise RuntimeError("boom in the pod")

    breaks()


@dag(dag_id="k8s_resolve", schedule=None)
def k8s_resolve():
    # A tag, resolved to its digest by the registry when the task starts (opt-in).
    @repro_task.kubernetes(
        image=os.environ.get("REPRO_TEST_TAGGED_IMAGE", "localhost:5999/acme/train:v1"),
        resolve_tag=True,
        kubernetes={"namespace": "ml"},
        outputs=["x.txt"],
        seed=1,
    )
    def tagged():
        runtime.current().output_path("x.txt").write_text("x")

    tagged()


@dag(dag_id="k8s_presigned", schedule=None, params={"scale": 2})
def k8s_presigned():
    # No shared volume: inputs and outputs travel through presigned URLs (transport="presigned").
    @repro_task.kubernetes(
        image=IMAGE,
        kubernetes={"namespace": "ml"},
        transport="presigned",
        inputs={"raw": Input("data/raw.txt", ref="main")},
        outputs=["data/lengths.txt", "data/count.txt"],
        seed=3,
    )
    def lengths(params=None):
        ctx = runtime.current()
        words = ctx.input_path("raw").read_text().split()
        ctx.output_path("data/lengths.txt").write_text(" ".join(str(len(w) * params["scale"]) for w in words))
        ctx.output_path("data/count.txt").write_text(str(len(words)))
        ctx.log_metric("words", len(words))

    @repro_task.kubernetes(
        image=IMAGE,
        kubernetes={"namespace": "ml"},
        transport="presigned",
        inputs={"lengths": Input("data/lengths.txt")},
        outputs=["data/total.txt"],
        seed=3,
    )
    def total():
        import sys

        ctx = runtime.current()
        assert "airflow" not in sys.modules
        ctx.output_path("data/total.txt").write_text(
            str(sum(int(n) for n in ctx.input_path("lengths").read_text().split()))
        )

    lengths() >> total()


@dag(dag_id="k8s_presigned_missing", schedule=None)
def k8s_presigned_missing():
    @repro_task.kubernetes(
        image=IMAGE, kubernetes={"namespace": "ml"}, transport="presigned", outputs=["a.txt", "b.txt"], seed=1
    )
    def forgets():
        runtime.current().output_path("a.txt").write_text("only a")

    forgets()


@dag(dag_id="k8s_auto", schedule=None)
def k8s_auto():
    # [repro] k8s_transport decides (the tests set it): presigned where lakeFS can presign.
    @repro_task.kubernetes(
        image=IMAGE,
        kubernetes={"namespace": "ml"},
        inputs={"raw": Input("data/raw.txt", ref="main")},
        outputs=["up.txt"],
        seed=1,
    )
    def shout():
        ctx = runtime.current()
        ctx.output_path("up.txt").write_text(ctx.input_path("raw").read_text().upper())

    shout()


k8s_record()
k8s_operator()
k8s_failing()
k8s_resolve()
k8s_presigned()
k8s_presigned_missing()
k8s_auto()
