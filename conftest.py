"""Shared pytest fixtures: a tiny Qwen2 model folder built offline, once per test session.

The model is tools/local_models.py's `tiny`: a random-init `Qwen2ForCausalLM` (2 layers, hidden 64) with a
byte-level BPE tokenizer trained in about a second with `tokenizers`, a ChatML chat template and the chat
special tokens; both are saved and reloaded with `from_pretrained` exactly like a hub model, so the scripts
under test take the same code path as for Qwen/Qwen2.5-Math-7B.
"""
import os
import pathlib
import sys

os.environ["HF_HUB_OFFLINE"] = "1"  # a hub id would otherwise take ~50 s to fail without internet
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# torch.compile on CPU costs ~20 s per function; tests of the compiled path switch it on themselves
os.environ.setdefault("EM_COMPILE", "0")

import pytest

ROOT = pathlib.Path(__file__).parent
MINI_MATH = ROOT / "data" / "mini_math.jsonl"
sys.path.insert(0, str(ROOT / "tools"))  # tools/ is not a package
from local_models import tiny as build_tiny_model  # noqa: E402  (tools/local_models.py: `tiny`)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Path to a tiny random Qwen2 folder (model + tokenizer), built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def mini_math():
    """Path to the project's small grade-school math file (problem / answer fields, like MATH-500)."""
    return str(MINI_MATH)
