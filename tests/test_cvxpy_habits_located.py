"""What CVXPY users write that regspec spells differently or does not do is refused at the place,
with the regspec spelling: `X >> 0` (PSD), integer and boolean variables."""
from __future__ import annotations

import pytest

import regspec
from regspec.diagnostics import RegspecError


def _error(body: str) -> str:
    with pytest.raises(RegspecError) as info:
        regspec.load("problem p {\n" + body + "\n}\n").compiled("p")
    return str(info.value)


def test_psd_ordering_points_to_in_psd():
    message = _error("  var X[3, 3]\n  minimize trace(X)\n  subject to X >> 0")
    assert ":4:17:" in message and "`X in psd`" in message and "do not chain" not in message


def test_integer_variables_are_refused_at_the_word():
    message = _error("  var x[4] integer\n  minimize sum_squares(x - 1)")
    assert ":2:12:" in message and "integer variables are not supported" in message
    assert "mixed-integer" in message and "space after" not in message


def test_a_boolean_set_says_mixed_integer_is_not_supported():
    message = _error("  var x[4] in boolean\n  minimize sum_squares(x - 1)")
    assert ":2:15:" in message and "unknown set `boolean`" in message and "mixed-integer" in message
