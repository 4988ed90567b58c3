"""The package's public names are exactly those in __all__, each defined where it says."""

from __future__ import annotations

import conveyor


def test_all_names_exist_and_are_public() -> None:
    for name in conveyor.__all__:
        assert hasattr(conveyor, name), name
    public = {
        name
        for name, value in vars(conveyor).items()
        if not name.startswith("_") and type(value).__name__ != "module"
    }
    assert public == set(conveyor.__all__) - {"__version__"}


def test_exported_classes_come_from_the_package() -> None:
    for name in conveyor.__all__:
        value = getattr(conveyor, name)
        module = getattr(value, "__module__", "conveyor")
        assert module is None or module.startswith("conveyor") or name in {"Clock", "system_clock"}


def test_the_sdk_exports_exactly_its_all() -> None:
    import conveyor.sdk as sdk

    for name in sdk.__all__:
        assert hasattr(sdk, name), name
    public = {
        name
        for name, value in vars(sdk).items()
        if not name.startswith("_") and type(value).__name__ != "module"
    }
    assert public == set(sdk.__all__)
    assert {"BatchInfo", "BatchStatus", "FileInfo", "Files", "Batches"} <= public
