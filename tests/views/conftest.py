import pytest


@pytest.fixture
def cap():
    """Widgets created in the test send their comm messages here instead of to a kernel."""
    from kvlab.views.capture import capture

    with capture() as c:
        yield c


@pytest.fixture
def coalescer():
    """A private views thread, so one test's widgets never wait on another's."""
    from kvlab.views import Coalescer

    c = Coalescer()
    yield c
    c.stop()
