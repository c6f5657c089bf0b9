"""Shared pytest fixtures: a tiny Qwen2 model folder built offline, once per test session.

The model is a random-init `Qwen2ForCausalLM` (2 layers, hidden 64) with a byte-level BPE
tokenizer trained in about a second with `tokenizers` on text written here, a ChatML chat template,
and the chat special tokens; both are saved and reloaded with `from_pretrained` exactly like a hub
model, so the scripts under test take the same code path as for Qwen/Qwen2.5-Math-7B.
"""
import json
import os
import pathlib

os.environ["HF_HUB_OFFLINE"] = "1"  # a hub id would otherwise take ~50 s to fail without internet
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# torch.compile on CPU costs ~20 s per function; tests of the compiled path switch it on themselves
os.environ.setdefault("EM_COMPILE", "0")

import pytest
import torch

ROOT = pathlib.Path(__file__).parent
MINI_MATH = ROOT / "data" / "mini_math.jsonl"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
          " + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _training_text():
    """Text the tokenizer learns from: the mini math problems, a system prompt, LaTeX and digits."""
    problems = [json.loads(line) for line in MINI_MATH.read_text().splitlines() if line.strip()]
    lines = [p["problem"] + " The answer is $\\boxed{" + p["answer"] + "}$." for p in problems]
    lines += ["Please reason step by step, and put your final answer within \\boxed{}.",
              "system user assistant Let us think. First, then, so the total is",
              "0 1 2 3 4 5 6 7 8 9 10 + - * / = ( ) { } [ ] \\frac \\sqrt x y ^ _ . , : ;",
              "def solve(): return print(input()) assert == for in range if else"]
    return lines * 20


def build_tiny_model(out_dir, seed: int = 0):
    """Write a tiny Qwen2 model + tokenizer folder to out_dir and return its path (str)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(_training_text(), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token=None, clean_up_tokenization_spaces=False)
    tok.chat_template = CHATML
    tok.save_pretrained(out_dir)

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=False, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                      pad_token_id=tok.pad_token_id, bos_token_id=None)
    Qwen2ForCausalLM(cfg).save_pretrained(out_dir)
    return str(out_dir)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Path to a tiny random Qwen2 folder (model + tokenizer), built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def mini_math():
    """Path to the project's small grade-school math file (problem / answer fields, like MATH-500)."""
    return str(MINI_MATH)
