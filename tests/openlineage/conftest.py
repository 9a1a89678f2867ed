"""OpenLineage tests: the provider switched on per test, and validation against the official specs.

The helpers (validator, ``openlineage_enabled``, the receiver, the small DAGs) are in
``tests/support/openlineage.py``. The session's Airflow DB and [repro] settings are shared with
tests/airflow (Airflow reads its configuration once per process, so every test directory of a
pytest run shares that home); the small DAGs are written into its DAGs folder here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import airflow_session
from tests.support.openlineage import LineageReceiver, OpenLineageValidator, require_specs, write_lineage_dags

airflow_session.start()
write_lineage_dags()


@pytest.fixture(scope="session")
def ol_validator() -> OpenLineageValidator:
    return OpenLineageValidator(require_specs())


@pytest.fixture
def receiver() -> Iterator[LineageReceiver]:
    with LineageReceiver() as running:
        yield running
