"""The error tree: one root, a shallow tree, a code and an optional param on each error."""

from __future__ import annotations

import inspect

import pytest

from conveyor import errors
from conveyor.errors import (
    Conflict,
    ConveyorError,
    EngineUnavailable,
    IdempotencyConflict,
    InvalidInput,
    InvalidTransition,
    LeaseLost,
    NotFound,
    WaitTimeout,
)

ALL = [
    ConveyorError,
    InvalidInput,
    NotFound,
    Conflict,
    IdempotencyConflict,
    LeaseLost,
    InvalidTransition,
    WaitTimeout,
    EngineUnavailable,
]

PARENT = {
    InvalidInput: ConveyorError,
    NotFound: ConveyorError,
    Conflict: ConveyorError,
    EngineUnavailable: ConveyorError,
    WaitTimeout: ConveyorError,
    IdempotencyConflict: Conflict,
    LeaseLost: Conflict,
    InvalidTransition: Conflict,
}


def defined_errors() -> list[type[BaseException]]:
    return [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, BaseException)
    ]


def test_every_error_in_the_module_is_under_the_root() -> None:
    assert set(defined_errors()) == set(ALL)
    assert all(issubclass(cls, ConveyorError) for cls in defined_errors())


def test_the_root_is_an_exception() -> None:
    assert issubclass(ConveyorError, Exception)
    assert ConveyorError.__bases__ == (Exception,)


@pytest.mark.parametrize(("cls", "parent"), list(PARENT.items()))
def test_each_error_has_its_place_in_the_tree(
    cls: type[ConveyorError], parent: type[ConveyorError]
) -> None:
    assert cls.__bases__ == (parent,)


@pytest.mark.parametrize("cls", [LeaseLost, IdempotencyConflict, InvalidTransition])
def test_lease_idempotency_and_transition_errors_are_conflicts(cls: type[ConveyorError]) -> None:
    with pytest.raises(Conflict):
        raise cls("clash")


@pytest.mark.parametrize("cls", [InvalidInput, NotFound, EngineUnavailable])
def test_other_errors_are_not_conflicts(cls: type[ConveyorError]) -> None:
    assert not issubclass(cls, Conflict)


def test_codes_are_distinct() -> None:
    codes = [cls.code for cls in ALL]
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (InvalidInput, "invalid_input"),
        (NotFound, "not_found"),
        (Conflict, "conflict"),
        (IdempotencyConflict, "idempotency_conflict"),
        (LeaseLost, "lease_lost"),
        (InvalidTransition, "invalid_transition"),
        (EngineUnavailable, "engine_unavailable"),
    ],
)
def test_each_error_has_its_code(cls: type[ConveyorError], code: str) -> None:
    assert cls.code == code


def test_error_carries_its_message_and_param() -> None:
    error = InvalidInput("level must be an integer from 0 to 9, got 10", param="level")
    assert error.message == "level must be an integer from 0 to 9, got 10"
    assert str(error) == error.message
    assert error.param == "level"


def test_param_is_optional() -> None:
    assert NotFound("no such task").param is None


def test_param_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        InvalidInput("message", "level")  # type: ignore[call-arg]


@pytest.mark.parametrize("cls", ALL)
def test_every_error_is_drawn_in_the_module_docstring(cls: type[ConveyorError]) -> None:
    assert errors.__doc__ is not None
    assert cls.__name__ in errors.__doc__
