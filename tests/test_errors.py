import pytest

import xbzrle


@pytest.mark.parametrize(
    "cls, also",
    [
        (xbzrle.DecodeError, ValueError),
        (xbzrle.StreamError, ValueError),
        (xbzrle.ParameterError, ValueError),
        (xbzrle.TransportError, OSError),
        (xbzrle.MigrationStateError, xbzrle.XbzrleError),
    ],
)
def test_every_error_has_one_root_and_its_builtin_meaning(cls, also):
    err = cls("boom")
    assert isinstance(err, xbzrle.XbzrleError)
    assert isinstance(err, also)
    assert str(err) == "boom"
