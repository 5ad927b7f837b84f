"""Fixtures of the kernel tests: a fresh seed per test, recorded so that a failure can be replayed."""

from __future__ import annotations

import os
import secrets

import pytest
import torch


def fresh_seed() -> int:
    """A new seed every run, or $SED_DEPLOY_TEST_SEED to replay one."""
    return int(os.environ.get("SED_DEPLOY_TEST_SEED") or secrets.randbits(31))


@pytest.fixture(scope="session")
def new_seed():
    """`fresh_seed` for fixtures of a wider scope than the per-test `seed`."""
    return fresh_seed


@pytest.fixture
def seed(record_property) -> int:
    value = fresh_seed()
    record_property("seed", value)
    print(f"seed={value} (replay with SED_DEPLOY_TEST_SEED={value})")
    return value


@pytest.fixture
def generator(seed) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
