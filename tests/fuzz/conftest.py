"""In-process CLI runs: BasicSR's root logger keeps the stream it was created with; reset it per test."""
from tests.robustness.conftest import fresh_basicsr_logger  # noqa: F401 (an autouse fixture)
