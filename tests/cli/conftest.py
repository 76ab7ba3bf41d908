"""The transfer tests' fixtures (tests/transfer/conftest.py) for ``hallucinator transfer``'s CLI tests."""

from tests.transfer.conftest import r18_checkpoint, small_set  # noqa: F401  (fixtures, found here by name)
