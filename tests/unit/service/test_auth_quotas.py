"""API keys (hashing, file format, constant-time lookup) and the in-process quota arithmetic."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from pydantic import SecretStr

from atomthink.errors import QuotaExceeded
from atomthink.settings import Settings
from service.api.auth import KeyRing, Principal
from service.quotas import MemoryQuotas, solve_cost
from service.schemas import SolveParams


def test_keys_from_settings_and_file_are_held_hashed(tmp_path: Path) -> None:
    hashed = hashlib.sha256(b"bob-secret").hexdigest()
    key_file = tmp_path / "keys"
    key_file.write_text(f"# team keys\nbob sha256:{hashed}\ncarol carol-secret  # trailing comment\n\n")
    ring = KeyRing.from_settings(Settings(api_keys={"alice": SecretStr("alice-secret")}, api_keys_file=key_file))
    assert ring.enabled and sorted(ring.names) == ["alice", "bob", "carol"]
    assert ring.identify("alice-secret") == Principal("alice")
    assert ring.identify("bob-secret") == Principal("bob")
    assert ring.identify("carol-secret") == Principal("carol")
    assert ring.identify("alice-secret ") is None and ring.identify("") is None
    assert "alice-secret" not in repr(vars(ring)) and "carol-secret" not in repr(vars(ring))


def test_no_keys_means_open_and_bad_files_name_the_line_not_the_key(tmp_path: Path) -> None:
    assert not KeyRing.from_settings(Settings()).enabled
    bad = tmp_path / "keys"
    bad.write_text("alice\n")
    with pytest.raises(ValueError, match=r"keys:1: expected"):
        KeyRing.from_settings(Settings(api_keys_file=bad))
    bad.write_text("al ice-secret x\n")
    with pytest.raises(ValueError, match=r"keys:1:") as info:
        KeyRing.from_settings(Settings(api_keys_file=bad))
    assert "secret" not in str(info.value)
    with pytest.raises(ValueError, match="same key"):
        KeyRing.from_settings(Settings(api_keys={"a": SecretStr("k"), "b": SecretStr("k")}))


def test_solve_cost_counts_candidates_per_step() -> None:
    assert solve_cost(SolveParams(question="q", mode="quick")) == 1
    assert solve_cost(SolveParams(question="q", mode="slow")) == 6  # beam: 3 candidates x 2 beams
    assert solve_cost(SolveParams(question="q", mode="slow", strategy="greedy", candidates=5)) == 5
    assert solve_cost(SolveParams(question="q", mode="slow", strategy="best_of_n", candidates=8)) == 8


def test_memory_quotas_concurrency_and_compute() -> None:
    async def scenario() -> None:
        quotas = MemoryQuotas(Settings(quota_max_concurrent=1, quota_candidates_per_minute=10))
        alice, bob = Principal("alice"), Principal("bob")
        async with quotas.admit(alice, 4):
            with pytest.raises(QuotaExceeded, match="already has 1 requests running") as running:
                async with quotas.admit(alice, 1):
                    pass
            assert running.value.retry_after_s == 1
            async with quotas.admit(bob, 1):  # another key has its own share
                pass
        async with quotas.admit(alice, 6):  # 4 + 6 = 10: exactly the quota
            pass
        with pytest.raises(QuotaExceeded, match="10 candidates per minute") as compute:
            async with quotas.admit(alice, 1):
                pass
        assert 55 <= compute.value.retry_after_s <= 60
        with pytest.raises(QuotaExceeded, match="over the key's quota"):
            async with quotas.admit(bob, 11):
                pass

    asyncio.run(scenario())
