"""Small random checkpoints for the model tests, written with `save_pretrained`."""

import collections
import itertools
import json
from pathlib import Path

import numpy as np

from rexjax.models._tokenizer import bytes_to_unicode, pre_tokenize


CORPUS = (
    "a photograph of an astronaut riding a horse on the moon, highly detailed, 4k. "
    "a painting of a cat sitting on the chair in the style of van gogh; oil on canvas! "
    "the quick brown fox jumps over the lazy dog's back - it's what they'll do, isn't it? "
)


def write_clip_tokenizer(folder: Path, num_merges: int = 300) -> Path:
    """A CLIP-style byte-level BPE vocabulary learned on a tiny corpus (vocab.json,
    merges.txt and the special-token files), in the layout of the SD1.5 `tokenizer/` folder."""
    folder.mkdir(parents=True, exist_ok=True)
    byte_map = bytes_to_unicode()
    words = collections.Counter(
        tuple("".join(byte_map[b] for b in w.encode())) for w in pre_tokenize(CORPUS, ())
    )
    words = collections.Counter({(*w[:-1], w[-1] + "</w>"): c for w, c in words.items()})
    vocab = list(byte_map.values()) + [c + "</w>" for c in byte_map.values()]
    merges = []
    for _ in range(num_merges):
        pairs = collections.Counter()
        for w, c in words.items():
            for p in itertools.pairwise(w):
                pairs[p] += c
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        vocab.append(best[0] + best[1])
        new = collections.Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i < len(w) - 1 and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n"
    )
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77, **special}))
    return folder


def perturb(model, scale: float = 0.05, seed: int = 0) -> None:
    """Add noise to every parameter, so zero-initialised layers are exercised too."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())
