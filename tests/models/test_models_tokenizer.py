"""The pure-Python CLIP tokenizer against transformers' `CLIPTokenizer`."""

import numpy as np
import pytest
from model_helpers import write_clip_tokenizer

import rexjax.models as rm


PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "A  Painting of   THE cat!!  4k 2024, isn't it?",
    "naïve café – déjà vu 東京 ŝ",
    "'hello' world's  (end) they'll we'd I'M",
    "x " * 100,  # truncated to 75 tokens + BOS + EOS
    "",
    "emoji 🐱🚀 and\ttabs\nnewlines",
    "van gogh's <|endoftext|> starry night",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    files = write_clip_tokenizer(tmp_path_factory.mktemp("tok"))
    reference = transformers.CLIPTokenizer.from_pretrained(files)
    saved = tmp_path_factory.mktemp("tok_json")
    reference.save_pretrained(saved)  # transformers 5 writes tokenizer.json only
    return files, saved, reference


@pytest.mark.parametrize("which", [0, 1])
def test_tokenizer_matches_transformers(folders, which):
    reference = folders[2]
    tokenizer = rm.load_tokenizer(folders[which])
    ours = tokenizer(PROMPTS)
    theirs = reference(PROMPTS, padding="max_length", max_length=77, truncation=True)
    np.testing.assert_array_equal(ours, np.array(theirs.input_ids))
    assert ours.shape == (len(PROMPTS), 77)
    assert (ours[:, 0] == tokenizer.bos_id).all()
    assert ours[4, -1] == tokenizer.eos_id


def test_tokenizer_pipeline_folder_and_errors(folders, tmp_path):
    (tmp_path / "tokenizer").mkdir()
    for f in folders[0].iterdir():
        (tmp_path / "tokenizer" / f.name).write_bytes(f.read_bytes())
    assert rm.load_tokenizer(tmp_path)("a cat").shape == (1, 77)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rm.load_tokenizer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        rm.load_tokenizer(tmp_path / "empty")
