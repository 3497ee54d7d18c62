"""Shared fixtures: tiny real models (open_clip CLIP, transformers CLIPModel) built offline."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python scripts/<script> args...`` from the repository root, output captured."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def run_torchrun(script: Path, *args: str, nproc: int = 2, timeout: int = 300, **popen) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node nproc script args`` on this machine's CPU (gloo
    ranks), output captured; one thread per rank."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               str(script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, **popen)


def hash_tree(root: Path) -> str:
    """One digest of every file's relative path and bytes under ``root`` (byte-identity checks)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def make_open_clip(seed: int = 0):
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=2, head_width=16, mlp_ratio=2.0),
        text_cfg=dict(context_length=16, vocab_size=100, width=32, heads=2, layers=2),
    )
    return model.eval()


def make_hf_clip(seed: int = 0):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=16,
            pad_token_id=0, bos_token_id=1, eos_token_id=2,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=32, patch_size=8,
        ),
        projection_dim=32,
    )
    return CLIPModel(config).eval()


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The test models are tiny: with two threads on a small CPU box, OpenMP barriers cost
    more than the ops themselves (about 15 ms per op under load). One thread avoids them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def open_clip_model():
    return make_open_clip()


@pytest.fixture
def hf_clip_model():
    return make_hf_clip()


@pytest.fixture
def clip_inputs():
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, 32, 32, generator=generator)
    tokens = torch.randint(1, 100, (4, 16), generator=generator)
    return images, tokens


TINY_OPEN_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 40, "vocab_size": 0, "width": 32, "heads": 2, "layers": 2},
}


def write_tiny_open_clip_dir(folder, words, seed: int = 0):
    """A tiny open_clip model in open_clip's local-dir layout, with a word tokenizer over ``words``."""
    import json
    from pathlib import Path

    import open_clip
    from safetensors.torch import save_file

    from vlmtl.models import WordTokenizer
    from vlmtl.models.tokenizer import WORD_TOKENIZER_FILE

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = WordTokenizer(words, context_length=40)
    cfg = json.loads(json.dumps(TINY_OPEN_CLIP_CFG))
    cfg["text_cfg"]["vocab_size"] = tokenizer.vocab_size
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3},
    }))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    tokenizer.save(folder / WORD_TOKENIZER_FILE)
    return folder


@pytest.fixture(scope="session")
def synthetic_vl(tmp_path_factory):
    """A small synthetic VL data set and a tiny open_clip model whose vocabulary covers it."""
    from vlmtl.data import read_jsonl, write_synthetic_dataset
    from vlmtl.models.tokenizer import split_words

    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(root / "data", n_train=24, n_val=8, seed=0)
    texts = [s.text for split in ("train", "val") for s in read_jsonl(root / "data" / f"{split}.jsonl", root / "data")]
    words = sorted({w for t in texts for w in split_words(t)})
    model_dir = write_tiny_open_clip_dir(root / "clip", words)
    return root / "data", model_dir


def write_tiny_llava_dir(path, texts, image_size: int = 32, seed: int = 0):
    """A tiny LLaVA saved as ``save_pretrained`` + word tokenizer + image processor (the
    layout of assets/vlmtl-tiny-llava), whose vocabulary covers ``texts``."""
    from transformers import CLIPImageProcessor

    from vlmtl.models.llava_build import save_llava, tiny_llava_for
    from vlmtl.models.llava_text import LlavaWordTokenizer

    tokenizer = LlavaWordTokenizer.build(texts)
    torch.manual_seed(seed)
    model = tiny_llava_for(tokenizer, image_size=image_size, patch_size=8, hidden=32, layers=2, heads=2,
                           vision_feature_layer=-1)
    processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                   crop_size={"height": image_size, "width": image_size})
    return save_llava(model, tokenizer, path, image_processor=processor)


@pytest.fixture(scope="session")
def synthetic_llava(synthetic_vl, tmp_path_factory):
    """The synthetic VL data set (as ``synthetic_vl``) and a tiny LLaVA folder covering its words."""
    from vlmtl.data import read_jsonl

    data, _ = synthetic_vl
    samples = [s for split in ("train", "val") for s in read_jsonl(data / f"{split}.jsonl", data)]
    texts = [s.text for s in samples] + [a for s in samples for a in (s.answers or [])]
    return data, write_tiny_llava_dir(tmp_path_factory.mktemp("llava") / "model", texts)


def write_hf_llava_dir(path, texts, image_size: int = 32, seed: int = 0):
    """A tiny LLaVA in the layout of a llava-hf checkpoint: ``save_pretrained`` weights, a
    transformers fast tokenizer (``tokenizer.json`` + ``tokenizer_config.json``, with an
    added ``<image>`` token) and a ``CLIPImageProcessor``; no vlmtl tokenizer file."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPImageProcessor, PreTrainedTokenizerFast

    from vlmtl.models.llava_build import build_tiny_llava

    special = ["<pad>", "<unk>", "<s>", "</s>"]
    splitter = pre_tokenizers.Whitespace()
    words = sorted({w for t in texts for w, _ in splitter.pre_tokenize_str(t)})
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(special + words)}, unk_token="<unk>"))
    backend.pre_tokenizer = splitter
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    torch.manual_seed(seed)
    model = build_tiny_llava(len(tokenizer), image_size=image_size, patch_size=8, hidden=32, layers=2, heads=2,
                             image_token_id=image_id, pad_token_id=tokenizer.pad_token_id,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             vision_feature_layer=-1)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path
