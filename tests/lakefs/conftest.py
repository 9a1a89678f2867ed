"""lakeFS-specific tests share the contract suite's double (spec-validated) and store fixtures."""

from tests.contract.conftest import lakefs_double, lakefs_server  # noqa: F401 - fixtures
