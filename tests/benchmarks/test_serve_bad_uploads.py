"""The bad files of the serve load check (--bad-every): the bombs declare what they say in their
headers, which the server reads and refuses before decoding; a mutant is one of the fuzzer's."""

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'mofme[serve]'")

from mofme.apps.serve.uploads import UploadError, probe_upload
from mofme.benchmarks.serve import bad_uploads
from mofme.data.fuzz import mutants


def test_bombs_are_refused_from_their_headers():
    files = bad_uploads(3, seed=5)
    assert [name for name, _ in files[1:]] == ["bomb.png", "bomb.tif"]
    assert files[0][1] == next(mutants(5, 1)).data
    png, tiff = files[1][1], files[2][1]
    assert len(png) < 100 and len(tiff) < 400_000  # small files ...
    assert probe_upload(png, name="p", max_pixels=10**11) == (100_000, 100_000)  # ... declaring much
    assert probe_upload(tiff, name="t", max_pixels=10**8) == (8192, 8192)
    for name, data in files[1:]:
        with pytest.raises(UploadError, match="pixels") as refused:
            probe_upload(data, name=name, max_pixels=25_000_000)
        assert refused.value.status == 413
