import pytest

from tests.conformance.corpus import Data


@pytest.fixture(scope='session')
def corpus_data(tmp_path_factory) -> Data:
    """The corpus's tiny data sets, made once per test session (folders on demand)."""
    return Data(str(tmp_path_factory.mktemp('conformance_data')))
