"""The gzip -9 yardstick: per-document and concatenated bits per byte, and the exact text recovery."""

import gzip
import shutil
import subprocess

import numpy as np
import pytest

from helpers import make_prepared
from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import DataError
from pretrainlab.eval.gzip_baseline import gzip_baseline, gzip_bits_per_byte, validation_texts

TEXTS = ["def f(x):\n    return x + 1\n" * 5, "import os\nprint(os.getcwd())\n", "é ü — unicode\n" * 3]


def test_per_document_and_concatenated_figures():
    out = gzip_bits_per_byte(TEXTS)
    total = sum(len(t.encode()) for t in TEXTS)
    per_doc = sum(8 * len(gzip.compress(t.encode(), 9, mtime=0)) for t in TEXTS) / total
    assert out.bytes == total and out.documents == 3
    assert out.per_document_bpb == pytest.approx(per_doc)
    assert out.concatenated_bpb < out.per_document_bpb  # one header, and shared context


@pytest.mark.skipif(shutil.which("gzip") is None, reason="no gzip binary")
def test_agrees_with_the_gzip_command():
    text = TEXTS[0] * 20
    cli = subprocess.run(["gzip", "-9", "-n", "-c"], input=text.encode(), capture_output=True, check=True).stdout
    ours = gzip_bits_per_byte([text]).per_document_bpb
    assert ours == pytest.approx(8 * len(cli) / len(text.encode()), rel=0.02)


def test_empty_text_is_refused():
    with pytest.raises(DataError, match="no held-out text"):
        gzip_bits_per_byte(["", ""])


def test_texts_recovered_from_val_shard(tmp_path):
    pytest.importorskip("pretrainlab.data.tokenizer")
    docs = [t.encode() for t in TEXTS]
    folder = make_prepared(tmp_path / "p", train={"code": [list(docs[0])]}, val={"code": [list(d) for d in docs]})
    data = PreparedData(folder)
    assert validation_texts(data, "code") == TEXTS
    assert gzip_baseline(data).bytes == sum(len(d) for d in docs)


def test_byte_count_mismatch_is_reported(tmp_path):
    pytest.importorskip("pretrainlab.data.tokenizer")
    folder = make_prepared(tmp_path / "p", train={"code": [[65]]}, val={"code": [[65, 66]]})
    bytes_file = folder / "code" / "val.bytes"
    bytes_file.write_bytes(np.array([5], dtype="<i8").tobytes())  # claims 5 bytes for "AB"
    with pytest.raises(DataError, match="document 0 decodes to 2 bytes"):
        validation_texts(PreparedData(folder), "code")
