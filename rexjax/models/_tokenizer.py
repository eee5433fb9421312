"""CLIP's byte-level BPE tokenizer (Radford et al. 2021) in pure Python.

Reads a tokenizer folder (`vocab.json` + `merges.txt`, or `tokenizer.json`) and reproduces
transformers' `CLIPTokenizer`: NFC normalisation, whitespace collapsing, lower-casing, CLIP's
pre-tokenisation pattern, byte-to-unicode mapping, BPE with the `</w>` end-of-word suffix,
then `<|startoftext|> ... <|endoftext|>` and padding to `model_max_length` (77).
"""

import functools
import itertools
import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np


_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch).startswith("L")


def _is_number(ch: str) -> bool:
    return unicodedata.category(ch).startswith("N")


def pre_tokenize(text: str, special: Sequence[str]) -> list[str]:
    """Split normalised text as CLIP's pattern does: special tokens, contractions, letter runs,
    single digits, and runs of other non-space characters; whitespace is dropped."""
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        match = next((s for s in (*special, *_CONTRACTIONS) if text.startswith(s, i)), None)
        if match is not None:
            j = i + len(match)
        elif _is_letter(ch):
            j = i + 1
            while j < n and _is_letter(text[j]):
                j += 1
        elif _is_number(ch):
            j = i + 1
        elif ch.isspace():
            i += 1
            continue
        else:
            j = i + 1
            while j < n and not (text[j].isspace() or _is_letter(text[j]) or _is_number(text[j])):
                j += 1
        out.append(text[i:j])
        i = j
    return out


def _special_content(value: str | dict | None, default: str) -> str:
    if value is None:
        return default
    return value["content"] if isinstance(value, dict) else value


class CLIPTokenizer:
    """Byte-level BPE tokenizer of CLIP, matching transformers' `CLIPTokenizer` ids.

    **Arguments:**

    - `vocab`: token -> id.
    - `merges`: BPE merges, highest priority first.
    - `bos_token`, `eos_token`, `pad_token`, `unk_token`: special tokens.
    - `model_max_length`: the padded length (77 for Stable Diffusion).
    """

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[tuple[str, str]],
        bos_token: str = "<|startoftext|>",
        eos_token: str = "<|endoftext|>",
        pad_token: str = "<|endoftext|>",
        unk_token: str = "<|endoftext|>",
        model_max_length: int = 77,
    ):
        missing = [t for t in (bos_token, eos_token, pad_token, unk_token) if t not in vocab]
        if missing:
            raise ValueError(f"Special tokens {missing} are not in the vocabulary.")
        self.vocab = vocab
        self.ranks = {tuple(pair): i for i, pair in enumerate(merges)}
        self.bos_id = vocab[bos_token]
        self.eos_id = vocab[eos_token]
        self.pad_id = vocab[pad_token]
        self.unk_id = vocab[unk_token]
        self.special = tuple(sorted({bos_token, eos_token, pad_token, unk_token}, key=len))[::-1]
        self.model_max_length = model_max_length
        self._byte_map = bytes_to_unicode()
        self._bpe = functools.lru_cache(maxsize=65536)(self._bpe_uncached)

    def _bpe_uncached(self, token: str) -> tuple[str, ...]:
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = set(itertools.pairwise(word))
            best = min(pairs, key=lambda p: self.ranks.get(p, len(self.ranks)))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without BOS/EOS or padding. Pieces missing from the vocabulary
        become the unknown token, as in transformers."""
        text = " ".join(unicodedata.normalize("NFC", text).split()).lower()
        ids = []
        for piece in pre_tokenize(text, self.special):
            if piece in self.special:
                ids.append(self.vocab[piece])
                continue
            mapped = "".join(self._byte_map[b] for b in piece.encode("utf-8"))
            ids.extend(self.vocab.get(t, self.unk_id) for t in self._bpe(mapped))
        return ids

    def __call__(self, prompts: str | Sequence[str], max_length: int | None = None) -> np.ndarray:
        """`(batch, max_length)` int32 ids: BOS, the prompt truncated to `max_length - 2`
        tokens, EOS, then padding (`padding="max_length", truncation=True` in transformers).

        **Arguments:**

        - `prompts`: one prompt or a sequence of prompts.
        - `max_length`: the padded length; defaults to `model_max_length`.

        **Returns:**

        A numpy array of token ids.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        length = self.model_max_length if max_length is None else max_length
        if length < 2:
            raise ValueError(f"max_length must be at least 2 (BOS and EOS), got {length}.")
        out = np.full((len(prompts), length), self.pad_id, dtype=np.int32)
        for row, prompt in enumerate(prompts):
            ids = [self.bos_id, *self.encode(prompt)[: length - 2], self.eos_id]
            out[row, : len(ids)] = ids
        return out


def _read_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_tokenizer(folder: str | Path) -> CLIPTokenizer:
    """Load CLIP's tokenizer from a folder (or the `tokenizer/` of a pipeline folder).

    **Arguments:**

    - `folder`: holds `vocab.json` and `merges.txt` (or a `tokenizer.json`), and optionally
        `tokenizer_config.json` / `special_tokens_map.json` for the special tokens and
        `model_max_length`.

    **Returns:**

    A [`rexjax.models.CLIPTokenizer`][].
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Tokenizer folder {str(folder)!r} does not exist.")
    if (folder / "tokenizer").is_dir():
        folder = folder / "tokenizer"
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        vocab = _read_json(folder / "vocab.json")
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
        merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
    elif (folder / "tokenizer.json").is_file():
        model = _read_json(folder / "tokenizer.json")["model"]
        vocab = model["vocab"]
        merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    else:
        raise FileNotFoundError(f"No vocab.json + merges.txt or tokenizer.json in {str(folder)!r}.")
    settings: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            settings.update(_read_json(folder / name))
    defaults = {"bos_token": "<|startoftext|>", "unk_token": "<|endoftext|>"}
    defaults.update(eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokens = {k: _special_content(settings.get(k), v) for k, v in defaults.items()}
    # transformers writes a huge sentinel (1e30) for "no limit"; CLIP's context is 77 tokens.
    max_length = settings.get("model_max_length", 77)
    if not isinstance(max_length, int) or max_length > 10**6:
        max_length = 77
    return CLIPTokenizer(vocab, merges, model_max_length=max_length, **tokens)
