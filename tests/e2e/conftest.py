"""The e2e suite runs against a real control plane, or is skipped (see ``controlplane``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.controlplane import ASSETS_ENV, ControlPlane, find_assets, run_control_plane


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    assets = find_assets()
    if assets is None:
        pytest.skip(f"{ASSETS_ENV} does not name a folder with etcd and kube-apiserver")
    with run_control_plane(tmp_path_factory.mktemp("controlplane"), assets=assets) as plane:
        yield plane
