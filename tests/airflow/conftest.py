"""In-process Airflow for tests: one SQLite metadata DB and one DAGs folder per session.

Airflow reads its configuration when first imported, so the session's environment is set here, when
pytest loads this file, before any test module imports Airflow (see ``tests/support/airflow_session.py``;
the ``airflow_db`` and ``repro_env`` fixtures are in ``tests/conftest.py``). DAGs run with
``dag.test()``: the real task runner, listeners and XCom, in this process.
"""

from __future__ import annotations

from tests.support import airflow_session

airflow_session.start()
