"""GPU training on Kubernetes, recorded by airflow-repro: the image by digest, the GPU that ran.

make_dataset -> train. Both tasks run in pods of the image built from ``images/train-gpu``
(see ``docs/kubernetes.md``) when ``[repro] execution = kubernetes``; with the default ``local``
they run in the Airflow worker like any ``@repro_task`` (``train`` then needs PyTorch there).
``train`` asks for one H100 (``nvidia.com/gpu: 1`` on nodes labelled
``nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3``, tolerating the ``nvidia.com/gpu`` taint) and falls
back to the CPU where no GPU is visible. Its manifest records the image digest the kubelet ran,
the node, and the GPU model and driver the task saw.

Set ``REPRO_EXAMPLE_TRAIN_IMAGE`` to your pushed image (``registry/repo@sha256:<digest>``).
The default below is a placeholder digest: it parses, but no registry serves it.
"""

from __future__ import annotations

import os

from airflow.sdk import dag

from airflow_repro import Input, repro_task, runtime

# [START k8s_image]
TRAIN_IMAGE = os.environ.get(
    "REPRO_EXAMPLE_TRAIN_IMAGE",
    "ghcr.io/acme/airflow-repro-train-gpu:0.1.0@sha256:" + "0" * 64,
)
# [END k8s_image]
SEED = 7
POD = {"namespace": os.environ.get("REPRO_EXAMPLE_NAMESPACE", "default"), "get_logs": True}


@dag(
    dag_id="example_k8s_gpu_pipeline",
    schedule=None,
    catchup=False,
    tags=["airflow-repro", "example", "kubernetes", "gpu"],
    params={"epochs": 5, "lr": 0.05},
    doc_md=__doc__,
)
def example_k8s_gpu_pipeline():
    @repro_task(
        image=TRAIN_IMAGE,
        kubernetes=POD,
        outputs=["data/points.csv"],
        seed=SEED,
        resources={"cpu": "500m", "memory": "512Mi"},
    )
    def make_dataset():
        import csv
        import random

        ctx = runtime.current()
        rng = random.Random(ctx.seed)
        with ctx.open_output("data/points.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["x1", "x2", "label"])
            for _ in range(2000):
                x1, x2 = rng.uniform(-1, 1), rng.uniform(-1, 1)
                writer.writerow([round(x1, 6), round(x2, 6), int(x1 * x1 + x2 * x2 < 0.5)])
        ctx.log_metric("rows", 2000)

    # [START k8s_gpu_task]
    @repro_task(
        image=TRAIN_IMAGE,
        kubernetes=POD,
        inputs={"points": Input("data/points.csv")},
        outputs=["models/model.pt", "reports/train.json"],
        seed=SEED,
        resources={"cpu": "4", "memory": "16Gi", "memory_limit": "16Gi", "gpu": 1, "accelerator": "h100"},
    )
    def train(params=None):
        import csv
        import json

        import torch  # in the image; never imported by Airflow when the DAG is parsed

        ctx = runtime.current()
        torch.manual_seed(ctx.seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with ctx.open_input("points", "r", newline="") as handle:
            rows = list(csv.DictReader(handle))
        features = torch.tensor([[float(r["x1"]), float(r["x2"])] for r in rows], device=device)
        labels = torch.tensor([[float(r["label"])] for r in rows], device=device)
        model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=params["lr"])
        loss_fn = torch.nn.BCEWithLogitsLoss()
        for _ in range(params["epochs"] * 20):
            optimizer.zero_grad()
            loss = loss_fn(model(features), labels)
            loss.backward()
            optimizer.step()
        accuracy = float(((model(features) > 0).float() == labels).float().mean())
        torch.save(model.state_dict(), ctx.output_path("models/model.pt"))
        report = {
            "device": device,
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
            "loss": round(float(loss), 6),
            "accuracy": round(accuracy, 6),
            "torch": torch.__version__,
        }
        with ctx.open_output("reports/train.json", "w") as handle:
            json.dump(report, handle, sort_keys=True)
        ctx.log_metrics({"loss": float(loss), "accuracy": accuracy})

    # [END k8s_gpu_task]

    make_dataset() >> train()


example_k8s_gpu_pipeline()
