"""GPU requests of a task, and its whole resource request, validated as Kubernetes would, at DAG parse time.

A GPU request is a count and, optionally, an accelerator: a named model, which schedules the pod
on nodes whose GPU-feature-discovery label ``nvidia.com/gpu.product`` names that model, or a MIG
slice of one, which requests the extended resource ``nvidia.com/mig-<profile>`` instead of
``nvidia.com/gpu`` (the device plugin's "mixed" MIG strategy)::

    from airflow_repro.core.gpus import H100_80GB, A100_40GB

    task_resources(task_id, cpu="4", memory="32Gi", gpu=1, accelerator=H100_80GB)
    task_resources(task_id, gpu=1, accelerator=A100_40GB.mig("1g.5gb"))

The result is the manifest's :class:`~airflow_repro.core.manifest.Resources`, which is also what
a replay reads back to request the same hardware. CPU and memory quantities are parsed by
:mod:`airflow_repro.core.resources` (``parse_quantity`` and ``quantity_text`` are still importable from
here). Pure: no Kubernetes import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_repro.core.manifest import Resources
from airflow_repro.core.resources import check_limit, parse_cpu, parse_memory, parse_quantity, quantity_text
from airflow_repro.errors import ResourceError

GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"  # set on each GPU node by NVIDIA GPU feature discovery

_MIG_RE = re.compile(r"^[1-7]g\.[0-9]+gb(?:\+me)?$")


@dataclass(frozen=True)
class Accelerator:
    """A GPU model: its name here and the ``nvidia.com/gpu.product`` label value of its nodes.

    For a model not listed below, give the label value your nodes carry (``kubectl get nodes
    -L nvidia.com/gpu.product``): ``Accelerator("rtx-6000", product="NVIDIA-RTX-6000-Ada-Generation")``.
    """

    name: str
    product: str
    resource: str = GPU_RESOURCE
    mig_profile: str | None = None

    def mig(self, profile: str) -> Accelerator:
        """A MIG slice of this model, e.g. ``A100_40GB.mig("1g.5gb")`` -> ``nvidia.com/mig-1g.5gb``."""
        if not _MIG_RE.match(profile):
            raise ResourceError(
                f"MIG profile {profile!r} is not a profile like '1g.10gb' or '3g.40gb' "
                "(see 'nvidia-smi mig -lgip' on the node)"
            )
        return Accelerator(f"{self.name}-mig-{profile}", self.product, f"nvidia.com/mig-{profile}", profile)


A100_40GB = Accelerator("nvidia-a100-40gb", "NVIDIA-A100-SXM4-40GB")
A100_80GB = Accelerator("nvidia-a100-80gb", "NVIDIA-A100-SXM4-80GB")
A10G = Accelerator("nvidia-a10g", "NVIDIA-A10G")
H100_80GB = Accelerator("nvidia-h100-80gb", "NVIDIA-H100-80GB-HBM3")
H200 = Accelerator("nvidia-h200", "NVIDIA-H200")
L4 = Accelerator("nvidia-l4", "NVIDIA-L4")
L40S = Accelerator("nvidia-l40s", "NVIDIA-L40S")
T4 = Accelerator("nvidia-tesla-t4", "Tesla-T4")
V100 = Accelerator("nvidia-tesla-v100", "Tesla-V100-SXM2-16GB")

KNOWN: dict[str, Accelerator] = {a.name: a for a in (A100_40GB, A100_80GB, A10G, H100_80GB, H200, L4, L40S, T4, V100)}
# Short names a DAG may use instead of the constants.
ALIASES: dict[str, Accelerator] = {
    "a100": A100_40GB,
    "a100-40gb": A100_40GB,
    "a100-80gb": A100_80GB,
    "a10g": A10G,
    "h100": H100_80GB,
    "h100-80gb": H100_80GB,
    "h200": H200,
    "l4": L4,
    "l40s": L40S,
    "t4": T4,
    "v100": V100,
}


def resolve_accelerator(accelerator: Accelerator | str | None, *, task_id: str) -> Accelerator | None:
    if accelerator is None or isinstance(accelerator, Accelerator):
        return accelerator
    if isinstance(accelerator, str):
        key = accelerator.strip().lower()
        found = KNOWN.get(key) or ALIASES.get(key) or ALIASES.get(key.removeprefix("nvidia-"))
        if found is not None:
            return found
    known = ", ".join(sorted(ALIASES))
    raise ResourceError(
        f"task {task_id}: unknown accelerator {accelerator!r}; use one of {known}, a constant from "
        "airflow_repro.core.gpus (e.g. H100_80GB), or Accelerator('<name>', product='<the nvidia.com/gpu.product "
        "label of your GPU nodes>')"
    )


def task_resources(
    task_id: str,
    *,
    cpu: Any = None,
    memory: Any = None,
    cpu_limit: Any = None,
    memory_limit: Any = None,
    gpu: Any = None,
    accelerator: Accelerator | str | None = None,
    allow_zero_gpu: bool = False,
    local: bool = False,
) -> Resources:
    """Validate a task's requests at DAG parse time and return them as the manifest records them.

    A pod task refuses ``gpu=0`` (leave ``gpu`` out for no GPU), so that a count computed or typed
    wrong never silently schedules a training step on CPU nodes; local tasks accept it
    (``allow_zero_gpu``), as they always have. A local task (``local``) also records an accelerator
    it does not schedule by as free text, as given, with or without ``gpu``; quantities stay strict.
    """
    try:
        cpu_cores = parse_cpu(cpu, "cpu")
        cpu_max = parse_cpu(cpu_limit, "cpu_limit")
        memory_text = parse_memory(memory, "memory")
        memory_max = parse_memory(memory_limit, "memory_limit")
        check_limit("cpu", cpu, cpu_limit)
        check_limit("memory", memory, memory_limit)
        count = 0 if allow_zero_gpu and gpu == 0 and not isinstance(gpu, bool) else _gpu_count(gpu)
    except ResourceError as exc:
        raise ResourceError(f"task {task_id}: {exc}") from exc
    if local and isinstance(accelerator, str) and accelerator.strip():
        try:
            chosen = resolve_accelerator(accelerator, task_id=task_id)
        except ResourceError:  # a local task schedules nothing by it: record the name as given
            return Resources(
                cpu=cpu_cores,
                memory=memory_text,
                cpu_limit=cpu_max,
                memory_limit=memory_max,
                gpu=count,
                accelerator=accelerator.strip(),
                gpu_resource=GPU_RESOURCE if count else None,
            )
    else:
        chosen = resolve_accelerator(accelerator, task_id=task_id)
    if chosen is not None and count == 0 and local:
        return Resources(
            cpu=cpu_cores,
            memory=memory_text,
            cpu_limit=cpu_max,
            memory_limit=memory_max,
            gpu=0,
            accelerator=chosen.name,
        )
    if chosen is not None and count == 0:
        raise ResourceError(f"task {task_id}: accelerator {chosen.name!r} is given without gpu=; ask for gpu=1 or more")
    return Resources(
        cpu=cpu_cores,
        memory=memory_text,
        cpu_limit=cpu_max,
        memory_limit=memory_max,
        gpu=count,
        accelerator=chosen.name if chosen else None,
        gpu_resource=chosen.resource if chosen else (GPU_RESOURCE if count else None),
        gpu_product=chosen.product if chosen else None,
    )


def resources_from_mapping(
    task_id: str, values: Mapping[str, Any] | Resources | None, *, allow_zero_gpu: bool = False, local: bool = False
) -> Resources:
    """``resources={...}`` as a DAG writes it (or a recorded ``Resources``), validated.

    ``local``: a task run in the worker, which schedules nothing by its accelerator (see :func:`task_resources`).
    """
    if values is None:
        return Resources()
    if isinstance(values, Resources):
        return values
    allowed = {"cpu", "memory", "cpu_limit", "memory_limit", "gpu", "accelerator"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ResourceError(f"task {task_id}: unknown resources {unknown}; use {sorted(allowed)}")
    return task_resources(task_id, **dict(values), allow_zero_gpu=allow_zero_gpu, local=local)


def _gpu_count(gpu: Any) -> int:
    """``None``: no GPU. Otherwise a positive int: 0 is refused so that a typo never silently drops a GPU."""
    if gpu is None:
        return 0
    if isinstance(gpu, bool) or not isinstance(gpu, int):
        raise ResourceError(f"gpu must be a positive whole number of GPUs (an int such as 1), got {gpu!r}")
    if gpu <= 0:
        raise ResourceError(f"gpu must be a positive number of GPUs (1 or more), got {gpu}; leave gpu out for no GPU")
    return gpu


__all__ = [
    "A100_40GB",
    "A100_80GB",
    "A10G",
    "ALIASES",
    "Accelerator",
    "GPU_RESOURCE",
    "H100_80GB",
    "H200",
    "KNOWN",
    "L4",
    "L40S",
    "PRODUCT_LABEL",
    "ResourceError",
    "T4",
    "V100",
    "parse_quantity",
    "quantity_text",
    "resolve_accelerator",
    "resources_from_mapping",
    "task_resources",
]
