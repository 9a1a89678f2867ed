"""Plain helpers for the tests: constants, builders of doubles, small functions.

Fixtures stay in ``conftest.py`` files. Importing anything here has no side effect on the process
(no environment variable set, no file written): where a test session needs one (the Airflow
session's home, a DAG file), a module here offers a function that a ``conftest.py`` calls.
"""
