# The Airflow image of docker-compose.yaml: Airflow 3.3 and airflow-repro, installed from uv.lock.
#
# Build context: the repository root (docker compose does this). Everything Python comes from the
# lockfile (`uv sync --frozen`), so the containers run exactly the versions the tests ran with.
FROM python:3.11-slim-bookworm

ENV UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    PYTHONUNBUFFERED=1

# curl: the compose health checks. git: DAG bundles and lockfile-pinned task environments.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl git \
    && rm -rf /var/lib/apt/lists/*

# The same uv the Makefile pins.
RUN pip install --no-cache-dir uv==0.13.8

WORKDIR /opt/airflow-repro

# Dependencies first (a layer that survives code edits), then the package itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project --extra lakefs --extra postgres --extra examples
COPY airflow_repro ./airflow_repro
RUN uv sync --frozen --no-dev --no-editable --extra lakefs --extra postgres --extra examples

ENV PATH=/opt/airflow-repro/.venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow

RUN useradd --create-home --uid 50000 --gid 0 airflow \
    && mkdir -p /opt/airflow/dags /opt/airflow/plugins /opt/airflow/logs /opt/airflow/repro \
    && chown -R 50000:0 /opt/airflow
USER 50000
WORKDIR /opt/airflow
