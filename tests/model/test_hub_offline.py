"""Pretrained names (`hf:...`) without network: one line, in a moment, not huggingface_hub's
retries (27 s and 22 warnings measured before), whether the network is missing or
HF_HUB_OFFLINE says so."""

from __future__ import annotations

import time

import pytest

from metauas.cli import main
from metauas.errors import UserError
from metauas.model import hub

NAME = "hf:csgaobb/MetaUAS/metauas-256.ckpt"


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache, and a hub endpoint that refuses connections (port 9
    of this machine), so the test means "no network" on any machine."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub.download.cache_clear()
    hub._hub_reachable.cache_clear()
    yield
    hub.download.cache_clear()
    hub._hub_reachable.cache_clear()


@pytest.mark.parametrize("hf_hub_offline", [None, "1"])
def test_an_offline_pretrained_name_fails_at_once_with_one_line(
    empty_hub, monkeypatch, hf_hub_offline, tmp_path, capsys
):
    if hf_hub_offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", hf_hub_offline)
    start = time.perf_counter()
    with pytest.raises(UserError, match="offline .* not in the Hugging Face cache"):
        hub.download(NAME)
    assert time.perf_counter() - start < 3
    image = tmp_path / "x.png"
    image.write_bytes(b"not read: the checkpoint fails first")
    start = time.perf_counter()
    code = main(
        ["predict", "--checkpoint", NAME, "--prompt", str(image), "--query", str(image), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and time.perf_counter() - start < 3
    assert "\n" not in err and "resolve/main/metauas-256.ckpt by hand" in err


def test_the_network_is_probed_once(empty_hub):
    assert hub.offline() and hub.offline()
    assert hub._hub_reachable.cache_info().misses == 1
