"""The odd-input corpus (issue 12): small files derived from real footage in shared/data (codecs, containers, colour,
timing, rotation, SAR, attached pictures, several streams, damage, bad paths), each run through the real
``vsr-engine upscale`` code path and checked for exit status, message, frames, PTS, streams copied, tags, SAR, bit
depth, HDR metadata, frame rate and an output that FFmpeg decodes without error. Build + run: about a minute."""
from __future__ import annotations

import os
import sys

import pytest

av = pytest.importorskip("av")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
import check_corpus as C  # noqa: E402
import make_corpus as M  # noqa: E402

from test_video import _fast_cpu  # noqa: E402,F401 (torch reference ops, one thread)

pytestmark = pytest.mark.skipif(not M.data_available(), reason=f"real clips not found under {M.DATA}")

CASES = [c for c, _ in M.cases()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    folder = str(root / "in")
    M.build(folder)
    out = root / "out"
    out.mkdir()
    return folder, str(out), C.tiny_weights(str(root))


def test_corpus_covers_the_issue():
    whys = " ".join(c.why for c in CASES)
    assert len(CASES) >= 30
    for word in ("full range", "BT.601", "BT.709", "BT.2020", "PQ", "HLG", "10-bit", "4:2:2", "4:4:4", "VFR",
                 "edit list", "B-frames", "non-zero start", "fragmented", "rotation", "SAR", "attached picture",
                 "2 audio + 2 subtitles", "damage in the middle", "truncated", "bad path", "empty repeat frames"):
        assert word in whys, word


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_file(corpus, case):
    folder, out, weights = corpus
    problems, what = C.check_case(case, folder, out, weights)
    assert not problems, f"{case.name} ({case.why}): {what}: " + "; ".join(problems)
