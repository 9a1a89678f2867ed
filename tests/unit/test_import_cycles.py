"""No import cycles in airflow_repro: none at all among module-level imports, and the recorded
operators, the record path they share and their lineage reach each other one way only."""

from __future__ import annotations

from tests.support.import_graph import cycles, import_graph

RECORD_PATH = {
    "airflow_repro.airflow.operators",
    "airflow_repro.airflow.kubernetes",
    "airflow_repro.airflow.record",
    "airflow_repro.airflow.lineage",
}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_cycle_among_module_level_imports() -> None:
    graph = import_graph(nested=False)
    assert graph.keys() >= RECORD_PATH and len(graph) > 40
    assert cycles(graph) == []


def test_the_record_path_has_no_cycle_even_through_deferred_imports() -> None:
    """``kubernetes`` imports nothing of ``operators`` (which loads it only for pod-mode tasks);
    both use ``record``, which reaches ``lineage`` only when the provider asks for facets."""
    graph = import_graph(nested=True)
    assert "airflow_repro.airflow.operators" not in graph["airflow_repro.airflow.kubernetes"]
    assert not graph["airflow_repro.airflow.record"] & {
        "airflow_repro.airflow.operators",
        "airflow_repro.airflow.kubernetes",
    }
    assert [c for c in cycles(graph) if c & RECORD_PATH] == []
