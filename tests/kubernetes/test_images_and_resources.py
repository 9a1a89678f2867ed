"""Image pins and resource requests: the pure rules, and the pod pieces built from them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from airflow_repro.adapters import k8s_podspec as podspec
from airflow_repro.core.gpus import (
    A100_40GB,
    H100_80GB,
    L4,
    T4,
    Accelerator,
    ResourceError,
    parse_quantity,
    quantity_text,
    task_resources,
)
from airflow_repro.core.images import ImageNotPinnedError, digest_of_image_id, parse_image, require_pinned
from airflow_repro.core.manifest import AirflowIdentity

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("image", "registry", "repository", "tag"),
    [
        (f"ghcr.io/acme/train@{DIGEST}", "ghcr.io", "acme/train", None),
        (f"ghcr.io/acme/train:v1.2@{DIGEST}", "ghcr.io", "acme/train", "v1.2"),
        (f"localhost:5000/train@{DIGEST}", "localhost:5000", "train", None),
        (f"python:3.11-slim@{DIGEST}", "docker.io", "library/python", "3.11-slim"),
        (f"acme/train@{DIGEST}", "docker.io", "acme/train", None),
        (
            f"123.dkr.ecr.eu-west-1.amazonaws.com/team/deep/train@{DIGEST}",
            "123.dkr.ecr.eu-west-1.amazonaws.com",
            "team/deep/train",
            None,
        ),
    ],
)
def test_pinned_images_are_accepted(image: str, registry: str, repository: str, tag: str | None) -> None:
    ref = require_pinned(image, task_id="t")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, DIGEST)
    assert str(parse_image(str(ref))) == str(ref), "the normalized reference parses to itself"


def test_a_mutable_tag_is_refused_with_how_to_pin_it() -> None:
    with pytest.raises(ImageNotPinnedError) as caught:
        require_pinned("ghcr.io/acme/train:latest", task_id="train")
    message = str(caught.value)
    assert "task train" in message and "mutable tag" in message
    assert "docker buildx imagetools inspect ghcr.io/acme/train:latest" in message
    assert "crane digest" in message and "ghcr.io/acme/train@sha256:<digest>" in message
    assert require_pinned("ghcr.io/acme/train:latest", task_id="train", resolve_tag=True).digest is None


@pytest.mark.parametrize(
    "image",
    [
        "ghcr.io/acme/train@sha256:abc",  # too short
        "ghcr.io/acme/train@sha256:" + "AB" * 32,  # upper case
        "ghcr.io/acme/train@sha512:" + "ab" * 64,  # not sha256
    ],
)
def test_malformed_digests_are_refused(image: str) -> None:
    with pytest.raises(ImageNotPinnedError, match=r"task t: .*malformed digest.*64 lowercase hex"):
        require_pinned(image, task_id="t")


@pytest.mark.parametrize("image", ["", "Upper/Case@" + DIGEST, "acme/train:bad tag"])
def test_malformed_references_are_refused(image: str) -> None:
    with pytest.raises(ImageNotPinnedError, match="task t: "):
        require_pinned(image, task_id="t")


def test_the_digest_of_a_container_status_image_id() -> None:
    assert digest_of_image_id(f"docker-pullable://ghcr.io/acme/train@{DIGEST}") == DIGEST
    assert digest_of_image_id(f"ghcr.io/acme/train@{DIGEST}") == DIGEST
    assert digest_of_image_id("sha256:short") is None and digest_of_image_id(None) is None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1.5", Decimal("1.5")),
        ("4Gi", Decimal(4 * 2**30)),
        ("512Mi", Decimal(512 * 2**20)),
        ("2G", Decimal(2 * 10**9)),
        ("1e3", Decimal(1000)),
        (".5", Decimal("0.5")),
        (3, Decimal(3)),
        (0.25, Decimal("0.25")),
    ],
)
def test_quantities_parse_as_kubernetes_does(text: object, value: Decimal) -> None:
    assert parse_quantity(text, what="x") == value


@pytest.mark.parametrize("text", ["2 GB", "2GB", "lots", "-1", "1.2.3", "Gi", "", True, None, "4 Gi"])
def test_quantities_kubernetes_would_reject_are_refused(text: object) -> None:
    with pytest.raises(ResourceError, match="not a Kubernetes quantity"):
        parse_quantity(text, what="memory")


def test_resources_are_validated_and_name_the_task_and_fix() -> None:
    with pytest.raises(ResourceError, match=r"task train: memory '2 GB' is not a Kubernetes quantity.*'4Gi'"):
        task_resources("train", memory="2 GB")
    with pytest.raises(ResourceError, match=r"task train: cpu_limit '1' is below the request '2'"):
        task_resources("train", cpu="2", cpu_limit="1")
    with pytest.raises(ResourceError, match="finer than Kubernetes allows"):
        task_resources("train", cpu="0.0001")
    for gpu in (0, -1, "2", 1.5, True):
        with pytest.raises(ResourceError, match="task train: gpu must be a positive"):
            task_resources("train", gpu=gpu)
    assert task_resources("train", gpu=0, allow_zero_gpu=True).gpu == 0, "local tasks keep accepting gpu=0"
    with pytest.raises(ResourceError, match=r"task train: unknown accelerator 'b200'.*h100.*Accelerator\("):
        task_resources("train", gpu=1, accelerator="b200")
    with pytest.raises(ResourceError, match="without gpu="):
        task_resources("train", accelerator=H100_80GB)
    with pytest.raises(ResourceError, match="not a profile like '1g.10gb'"):
        A100_40GB.mig("big")


def test_gpu_requests_become_limits_node_selector_and_tolerations() -> None:
    resources = task_resources("t", cpu="500m", memory="2Gi", memory_limit="4Gi", gpu=2, accelerator="h100")
    assert resources.accelerator == "nvidia-h100-80gb" and resources.cpu == 0.5
    assert podspec.resource_requirements(resources) == {
        "requests": {"cpu": "500m", "memory": "2Gi", "nvidia.com/gpu": "2"},
        "limits": {"memory": "4Gi", "nvidia.com/gpu": "2"},
    }
    assert podspec.gpu_node_selector(resources) == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert podspec.gpu_tolerations(resources) == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    cpu_only = task_resources("t", cpu=2)
    assert podspec.gpu_node_selector(cpu_only) == {} and podspec.gpu_tolerations(cpu_only) == []
    assert podspec.resource_requirements(task_resources("t")) is None


def test_mig_slices_and_named_models() -> None:
    mig = task_resources("t", gpu=1, accelerator=A100_40GB.mig("1g.5gb"))
    assert podspec.resource_requirements(mig) == {
        "requests": {"nvidia.com/mig-1g.5gb": "1"},
        "limits": {"nvidia.com/mig-1g.5gb": "1"},
    }
    assert mig.gpu_product == "NVIDIA-A100-SXM4-40GB"
    assert task_resources("t", gpu=1, accelerator="l4").gpu_product == L4.product
    assert task_resources("t", gpu=1, accelerator="T4").gpu_product == T4.product
    custom = Accelerator("rtx-6000", product="NVIDIA-RTX-6000-Ada-Generation")
    assert task_resources("t", gpu=1, accelerator=custom).gpu_product == "NVIDIA-RTX-6000-Ada-Generation"
    assert [quantity_text(v) for v in (2.0, 0.5, 1.25, 0.001)] == ["2", "500m", "1250m", "1m"]


def test_label_values_are_valid_and_distinct() -> None:
    run_id = "manual__2026-11-27T00:36:12.662144+00:00"
    value = podspec.label_value(run_id)
    assert len(value) <= 63 and "+" not in value and ":" not in value
    assert podspec.label_value("scheduled__2026-11-27T00:36:12.662144+00:00") != value
    long_value = podspec.label_value("x" * 200)
    assert len(long_value) <= 63 and long_value != podspec.label_value("x" * 199)
    assert podspec.label_value("train") == "train"
    labels = podspec.pod_labels(AirflowIdentity(dag_id="d" * 80, run_id=run_id, task_id="t", try_number=2))
    assert all(len(v) <= 63 for v in labels.values()) and labels["airflow-repro.dev/try-number"] == "2"
