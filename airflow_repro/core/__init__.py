"""Pure domain of airflow-repro: manifests, pins, naming and the ports to outside systems.

Imports no Airflow, MLflow, lakeFS, Kubernetes or OpenLineage module (a test enforces it).
"""
