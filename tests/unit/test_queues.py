"""Queue names, levels, `name:level` addresses, a worker's queue list, and queue configs."""

from __future__ import annotations

import msgspec
import pytest

from conveyor.domain.queues import (
    DEFAULT_MAX_LEVEL,
    MAX_LEVEL_LIMIT,
    Lane,
    QueueConfig,
    QueueUpdate,
    Source,
    parse_address,
    resolve_sources,
    validate_level,
    validate_queue_name,
)
from conveyor.domain.retry import Backoff
from conveyor.errors import InvalidInput

# ---- names ----


@pytest.mark.parametrize(
    "name", ["a", "Z", "0", "_", "-", "mail", "Mail_2-fast", "a" * 64, "9" * 64, "-_-"]
)
def test_valid_queue_names_are_accepted(name: str) -> None:
    assert validate_queue_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 65,
        " ",
        "mail ",
        " mail",
        "two words",
        "mail\n",
        "mail\t",
        "mail:0",
        "mail.eu",
        "mail/eu",
        "café",
        "\uff4d\uff41\uff49\uff4c",  # "mail" in fullwidth letters
        "队列",
        "mail\x00",
    ],
)
def test_invalid_queue_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_queue_name(name)
    assert info.value.param == "queue"
    assert "1-64 characters of letters, digits, '_' or '-'" in info.value.message


@pytest.mark.parametrize("name", [None, 5, b"mail", ["mail"]])
def test_non_string_queue_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidInput):
        validate_queue_name(name)


def test_queue_name_error_names_the_param_it_was_given() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_queue_name("bad name", "name")
    assert info.value.param == "name"


# ---- levels ----


@pytest.mark.parametrize(("level", "max_level"), [(0, 9), (9, 9), (0, 0), (99, 99), (5, 9)])
def test_levels_from_zero_to_max_are_accepted(level: int, max_level: int) -> None:
    assert validate_level(level, max_level) == level


@pytest.mark.parametrize(("level", "max_level"), [(-1, 9), (10, 9), (1, 0), (100, 99), (10**20, 9)])
def test_levels_outside_zero_to_max_are_refused(level: int, max_level: int) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_level(level, max_level)
    assert info.value.param == "level"
    assert f"from 0 to {max_level}" in info.value.message


@pytest.mark.parametrize("level", [True, False, 1.0, "1", None])
def test_levels_that_are_not_plain_integers_are_refused(level: object) -> None:
    with pytest.raises(InvalidInput):
        validate_level(level, 9)


def test_default_max_level_is_nine() -> None:
    assert DEFAULT_MAX_LEVEL == 9
    assert QueueConfig(name="q").max_level == 9


# ---- addresses ----


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail", ("mail", None)),
        ("mail:0", ("mail", 0)),
        ("mail:9", ("mail", 9)),
        ("mail:42", ("mail", 42)),
        ("a" * 64 + ":3", ("a" * 64, 3)),
    ],
)
def test_address_is_a_name_with_an_optional_level(
    text: str, expected: tuple[str, int | None]
) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "mail:",
        "mail:x",
        "mail:-1",
        "mail:+1",
        "mail: 1",
        "mail:1.0",
        "mail:1:2",
        "mail:²",
        "mail:٣",
    ],
)
def test_address_with_a_bad_level_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_address(text)
    assert info.value.param == "queues"
    assert "'name' or 'name:level'" in info.value.message


def test_address_with_a_huge_level_is_refused_as_invalid_input() -> None:
    # a level too long for int() must not escape as a bare ValueError
    with pytest.raises(InvalidInput) as info:
        parse_address("mail:" + "9" * 5000)
    assert info.value.param == "queues"


@pytest.mark.parametrize("text", [":1", "", "bad name:1", "a" * 65, "a" * 65 + ":1", "é:1"])
def test_address_with_a_bad_name_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_address(text)
    assert info.value.param == "queues"


@pytest.mark.parametrize("text", [None, 3, ["mail"]])
def test_address_that_is_not_a_string_is_refused(text: object) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_address(text)
    assert "must be a string" in info.value.message


def test_lane_prints_as_its_address() -> None:
    assert str(Lane("mail", 3)) == "mail:3"


# ---- a worker's queue list ----


def test_bare_name_means_all_levels_most_urgent_first() -> None:
    assert resolve_sources(["mail"], {"mail": 3}, 9) == [Source("mail", (0, 1, 2, 3))]


def test_level_address_means_that_level_only() -> None:
    assert resolve_sources(["mail:2"], {"mail": 3}, 9) == [Source("mail", (2,))]


def test_sources_keep_list_order() -> None:
    sources = resolve_sources(["b:1", "a", "c:0"], {"a": 1, "b": 1, "c": 1}, 9)
    assert sources == [Source("b", (1,)), Source("a", (0, 1)), Source("c", (0,))]


def test_repeated_address_is_dropped() -> None:
    assert resolve_sources(["mail:1", "mail:1"], {"mail": 3}, 9) == [Source("mail", (1,))]


def test_bare_name_after_a_level_keeps_only_the_levels_not_yet_listed() -> None:
    sources = resolve_sources(["mail:2", "mail"], {"mail": 3}, 9)
    assert sources == [Source("mail", (2,)), Source("mail", (0, 1, 3))]


def test_level_after_a_bare_name_is_dropped_entirely() -> None:
    assert resolve_sources(["mail", "mail:2"], {"mail": 3}, 9) == [Source("mail", (0, 1, 2, 3))]


def test_source_lanes_are_its_levels_in_order() -> None:
    assert Source("mail", (0, 2)).lanes() == (Lane("mail", 0), Lane("mail", 2))


def test_unknown_queue_uses_the_default_max_level() -> None:
    (source,) = resolve_sources(["fresh"], {}, DEFAULT_MAX_LEVEL)
    assert source.levels == tuple(range(DEFAULT_MAX_LEVEL + 1))
    assert resolve_sources(["fresh:9"], {}, DEFAULT_MAX_LEVEL) == [Source("fresh", (9,))]
    with pytest.raises(InvalidInput):
        resolve_sources(["fresh:10"], {}, DEFAULT_MAX_LEVEL)


def test_level_beyond_the_queues_own_max_is_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        resolve_sources(["mail:4"], {"mail": 3}, 9)
    assert info.value.param == "queues"
    assert "from 0 to 3" in info.value.message


def test_empty_queue_list_is_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        resolve_sources([], {}, 9)
    assert info.value.param == "queues"


def test_one_bad_address_refuses_the_whole_list() -> None:
    with pytest.raises(InvalidInput):
        resolve_sources(["mail", "bad name"], {}, 9)


# ---- queue configs ----


def test_default_config_is_valid() -> None:
    config = QueueConfig(name="mail")
    assert config.validated() is config


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"name": "bad name"}, "name"),
        ({"max_level": -1}, "max_level"),
        ({"max_level": MAX_LEVEL_LIMIT + 1}, "max_level"),
        ({"max_level": True}, "max_level"),
        ({"lease_s": 0.0}, "lease_s"),
        ({"lease_s": -1.0}, "lease_s"),
        ({"lease_s": float("nan")}, "lease_s"),
        ({"lease_s": float("inf")}, "lease_s"),
        ({"lease_s": 86_401.0}, "lease_s"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 1_001}, "max_attempts"),
        ({"backoff": Backoff(base_s=-1.0)}, "backoff.base_s"),
        ({"backoff": Backoff(base_s=10.0, cap_s=5.0)}, "backoff.cap_s"),
        ({"backoff": Backoff(jitter=1.5)}, "backoff.jitter"),
        ({"retention_s": 0.0}, "retention_s"),
        ({"retention_s": 367 * 86_400.0}, "retention_s"),
    ],
)
def test_config_validation_names_the_field_to_fix(changes: dict[str, object], param: str) -> None:
    config = msgspec.structs.replace(QueueConfig(name="mail"), **changes)
    with pytest.raises(InvalidInput) as info:
        config.validated()
    assert info.value.param == param
    assert param.rpartition(".")[2] in info.value.message


@pytest.mark.parametrize("max_level", [0, MAX_LEVEL_LIMIT])
def test_config_max_level_edges_are_accepted(max_level: int) -> None:
    QueueConfig(name="mail", max_level=max_level).validated()


def test_update_changes_only_the_fields_it_names() -> None:
    config = QueueConfig(name="mail", lease_s=30.0, max_attempts=5)
    updated = QueueUpdate(paused=True, max_attempts=7).apply(config)
    assert updated.paused is True
    assert updated.max_attempts == 7
    assert updated.lease_s == 30.0
    assert updated.name == "mail"


def test_update_can_set_a_flag_back_to_false() -> None:
    paused = QueueConfig(name="mail", paused=True)
    assert QueueUpdate(paused=False).apply(paused).paused is False


def test_empty_update_changes_nothing() -> None:
    config = QueueConfig(name="mail", lease_s=30.0)
    assert QueueUpdate().apply(config) == config


@pytest.mark.parametrize(
    ("update", "param"),
    [
        (QueueUpdate(max_level=MAX_LEVEL_LIMIT + 1), "max_level"),
        (QueueUpdate(lease_s=0.0), "lease_s"),
        (QueueUpdate(max_attempts=0), "max_attempts"),
        (QueueUpdate(backoff=Backoff(jitter=-0.1)), "backoff.jitter"),
        (QueueUpdate(retention_s=-5.0), "retention_s"),
    ],
)
def test_update_that_breaks_a_rule_is_refused(update: QueueUpdate, param: str) -> None:
    with pytest.raises(InvalidInput) as info:
        update.apply(QueueConfig(name="mail"))
    assert info.value.param == param
