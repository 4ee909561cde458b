"""Config tests: the errors a document gets, as `edgeagent validate` reports them."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from edgeagent.config.loader import pydantic_errors


def assert_reported(model: type[BaseModel], document: dict, prefix: str,
                    expected: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    """Validating `document` fails with exactly the `expected` (path, words in the message)
    errors, in order; returns the (path, message) pairs."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(document)
    errors = pydantic_errors(caught.value, prefix, model)
    assert [path for path, _ in errors] == [path for path, _ in expected]
    for (_, message), (path, words) in zip(errors, expected, strict=True):
        for word in words:
            assert word in message, f"{path}: {message!r} does not mention {word!r}"
    return errors
