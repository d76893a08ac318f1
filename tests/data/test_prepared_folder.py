import json

import pytest

from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import DataError


def test_helper_folder_opens(tiny_prepared):
    data = PreparedData(tiny_prepared)
    assert data.domains == ["alpha", "beta"]
    shard = data.shard("alpha", "train")
    assert shard.n_docs == 200
    assert int(shard.tokens[shard.offsets[1] - 1]) == data.eot_id


def test_edited_manifest_is_refused(tiny_prepared):
    path = tiny_prepared / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["domains"]["alpha"]["train"]["tokens"] += 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="fingerprint"):
        PreparedData(tiny_prepared)


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        PreparedData(tmp_path / "nowhere")
