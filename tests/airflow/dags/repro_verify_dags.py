"""DAGs of the verify tests: an unseeded float perturbation in one cell of a table; unseeded noise downstream."""

import os

from airflow.sdk import dag

from airflow_repro import Input, Output, repro_task, runtime


def _noise() -> float:
    """A perturbation in [1e-9, 2e-9) that no seed governs, as GPU kernels or summation order give."""
    return (1 + int.from_bytes(os.urandom(4), "big") / 2**32) * 1e-9


@dag(dag_id="repro_float_noise", schedule=None)
def repro_float_noise():
    @repro_task(outputs={"metrics.csv": Output(abs_tol=1e-6), "stable.txt": None}, seed=3)
    def train():
        ctx = runtime.current()
        losses = [0.25, 0.5, 0.75 + _noise(), 1.0]
        ctx.output_path("metrics.csv").write_text("step,loss\n" + "".join(f"{i},{v!r}\n" for i, v in enumerate(losses)))
        ctx.output_path("stable.txt").write_text("always the same")

    train()


repro_float_noise()


@dag(dag_id="repro_noisy_after_prepare", schedule=None)
def repro_noisy_after_prepare():
    @repro_task(outputs=["prepared.txt"], seed=1)
    def prepare():
        runtime.current().output_path("prepared.txt").write_text("the same every time")

    @repro_task(inputs={"prepared": Input("prepared.txt")}, outputs=["noise.bin"], seed=2)
    def noisy():
        runtime.current().output_path("noise.bin").write_bytes(os.urandom(32))  # not governed by the seed

    prepare() >> noisy()


repro_noisy_after_prepare()
