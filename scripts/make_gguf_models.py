#!/usr/bin/env python3
"""Tiny GGUF models written by llama.cpp's own converter, with transformers' readings of them.

Writes tests/data/gguf-models/ (run with /opt/pyref/bin/python: torch, transformers,
tokenizers, sentencepiece, gguf; deterministic for a given set of package versions):

For each architecture below, a tiny random Hugging Face model (fixed seed; every
weight random, norms included) with a tiny tokenizer of the family the
architecture uses, trained here on the built-in text:
- SentencePiece BPE with byte fallback (`tokenizer.model`): llama, gemma2,
  gemma3, phi3, nemotron;
- byte-level BPE (`tokenizer.json`, trained with `tokenizers`): qwen2, qwen3,
  qwen3_moe, qwen2_moe, gpt2, starcoder2, stablelm, falcon;
saved with `save_pretrained` into a temporary folder and converted with
llama.cpp's `convert_hf_to_gguf.py` (LLAMA_CPP=path to a llama.cpp checkout,
e.g. the `vendor/llama.cpp` of the llama-cpp-python source package) to
`<arch>-<type>.gguf`. The converter names a byte-level BPE pre-tokenizer by
hashing what the tokenizer makes of a test string; a tokenizer trained here
has no known hash, so the wrapper below tells it the name (`qwen2`, `gpt-2`).
Q4_K / Q6_K files are made from the F16 file by llama.cpp's `llama-quantize
--pure` (LLAMA_QUANTIZE=path to the binary) when it is available: tensors whose
rows are not whole 256-blocks get its fallback type.

References, all written by transformers itself from the GGUF file alone:
- `<arch>-<type>.expected.safetensors`: the state dict of
  `AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=torch.bfloat16)`,
  without tied duplicates (what save_pretrained leaves out);
- `<arch>.config.json`: `{"gguf": the dict transformers' GGUF loader derives
  from the metadata, "to_dict": config.to_dict()}` (the same for every type of
  one model, checked);
- `<arch>.tokenizer.json`: `{"files": {name: contents}}` of
  `AutoTokenizer.from_pretrained(dir, gguf_file=...).save_pretrained(tmp)`,
  and `"cases"`: for each test text, the ids with and without special tokens
  and their decodes (the same for every type, checked).
Where transformers' GGUF loader gives a state dict that the model class does
not accept, the reference is what the class expects (see the README there).
gpt_oss (which transformers cannot load from GGUF at all) is made from a tiny
model in the released checkpoints' MXFP4 layout, and its references are the
original model's (make_gpt_oss).

Run: LLAMA_CPP=... LLAMA_QUANTIZE=... /opt/pyref/bin/python scripts/make_gguf_models.py [arch ...]

The full type matrix (every architecture but gpt_oss in F16, BF16, Q8_0, Q4_K
and Q6_K, hidden size 256 so that K-quant rows are whole blocks; ~60 files,
~70 MB, not committed) goes to another folder and is checked with the same
tools:

    GGUF_MODELS_MATRIX=1 GGUF_MODELS_OUT=/tmp/gguf-matrix /opt/pyref/bin/python scripts/make_gguf_models.py
    GYROFS_GGUF_MODELS=/tmp/gguf-matrix cargo test --release --test gguf_hf
    GGUF_MODELS_OUT=/tmp/gguf-matrix /opt/pyref/bin/python scripts/check_gguf_hf.py --mount
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

OUT = Path(os.environ.get("GGUF_MODELS_OUT") or Path(__file__).resolve().parent.parent / "tests" / "data" / "gguf-models")
# The type matrix (not committed: see the docstring): hidden 256, so that K-quant rows are whole
# 256-blocks, and every architecture in every type of MATRIX_TYPES.
MATRIX = os.environ.get("GGUF_MODELS_MATRIX") == "1"
HIDDEN = 256 if MATRIX else 32
MATRIX_TYPES = ["f16", "bf16", "q8_0", "q4_k", "q6_k"]
LLAMA_CPP = Path(os.environ.get("LLAMA_CPP", "/work/tmp-gguf/llama_cpp_python-0.3.36/vendor/llama.cpp"))
LLAMA_QUANTIZE = os.environ.get("LLAMA_QUANTIZE", str(LLAMA_CPP / "build" / "bin" / "llama-quantize"))

TEXT = """The quick brown fox jumps over the lazy dog. A tiny model reads a tiny book.
Hello world! Hello, hello; hello... 12345 67890 3.14159 2024-06-01 100% #1 @home
Numbers: one two three four five six seven eight nine ten eleven twelve.
def main():\n    print("hi")\n    return 0\n\nfor i in range(10):\n\tx = i * 2
Das Wetter ist schön. Ça va très bien, merci! ¿Qué tal? Ünïcödé façade naïve café.
日本語のテキストです。中文文本。 Русский текст. Ελληνικά. 한국어 텍스트.
Emoji: 🙂 🚀 ✅. Tabs\tand  double  spaces   and newlines\n\n\nend.
It's, I'm, you're, we've, they'll, he'd. THE END, the end, The End.
"""

TESTS = [
    "Hello world",
    " Hello  world ",
    "The quick brown fox jumps over the lazy dog.",
    "12345 3.14 x=42",
    "Ça va très bien, merci! café naïve",
    "日本語 中文 Русский 🙂🚀",
    "line one\nline two\n\n\ttabbed  spaced",
    "It's you're they'll",
    "   leading spaces",
    "<s> </s> <bos> <eos> <|endoftext|> <|im_start|>user\nhi<|im_end|> <start_of_turn> <|user|> <think>",
    "unseen characters: ☃ ∑ ℵ",
    "",
]


def seed(n):
    torch.manual_seed(n)
    np.random.seed(n)


def randomize(model, n):
    """Every parameter random (norms too), so no transform can hide behind a constant."""
    g = torch.Generator().manual_seed(n)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name or "ln_" in name:
                p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))


# ---------------------------------------------------------------- tokenizers


def train_spm(folder: Path, kind: str):
    """A SentencePiece BPE model with byte fallback, as llama/gemma/phi3 ship it."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text(TEXT * 3)
        args = dict(
            input=str(corpus),
            model_prefix=str(Path(tmp) / "m"),
            model_type="bpe",
            vocab_size=440,
            byte_fallback=True,
            character_coverage=0.99,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            remove_extra_whitespaces=False,
            normalization_rule_name="identity",
            num_threads=1,
            minloglevel=2,
            hard_vocab_limit=False,
        )
        if kind == "gemma":
            args.update(pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
                        unk_piece="<unk>", user_defined_symbols=["<mask>", "<start_of_turn>", "<end_of_turn>"])
        else:
            args.update(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
        spm.SentencePieceTrainer.train(**args)
        shutil.copy(Path(tmp) / "m.model", folder / "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    return sp.vocab_size()


def spm_tokenizer_config(folder: Path, kind: str, n_vocab: int):
    if kind == "gemma":
        cfg = {
            "tokenizer_class": "GemmaTokenizer",
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "chat_template": "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
        }
    elif kind == "phi3":
        extra = ["<|endoftext|>", "<|assistant|>", "<|user|>", "<|end|>", "<think>"]
        cfg = {
            "tokenizer_class": "LlamaTokenizer",
            "add_bos_token": False,
            "add_eos_token": False,
            "bos_token": "<s>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<unk>",
            "added_tokens_decoder": {
                str(n_vocab + i): {"content": t, "special": t != "<think>", "lstrip": False, "rstrip": t == "<|end|>",
                                   "normalized": False, "single_word": False}
                for i, t in enumerate(extra)
            },
            "chat_template": "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
        }
        (folder / "added_tokens.json").write_text(json.dumps({t: n_vocab + i for i, t in enumerate(extra)}))
    else:
        cfg = {
            "tokenizer_class": "LlamaTokenizer",
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}",
        }
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))


QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_bpe(folder: Path, kind: str):
    """A byte-level BPE, as gpt2 and qwen ship it (tokenizer.json)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    if kind == "qwen":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        specials = ["<|endoftext|>"]
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=330, min_frequency=2, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([TEXT] * 3, trainer)
    if kind == "qwen":
        fast = transformers.PreTrainedTokenizerFast(
            tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
            additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        )
        fast.add_tokens(["<think>", "</think>"])  # plain added tokens (USER_DEFINED in GGUF)
        fast.chat_template = (
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        )
    else:
        fast = transformers.PreTrainedTokenizerFast(
            tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<|endoftext|>",
        )
    fast.save_pretrained(folder)
    return len(fast)


# ---------------------------------------------------------------- models

SMALL = dict(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=128)


def arch_llama(folder):
    n = train_spm(folder, "llama")
    spm_tokenizer_config(folder, "llama", n)
    cfg = transformers.LlamaConfig(vocab_size=n, intermediate_size=256, rms_norm_eps=1e-5, rope_theta=10000.0,
                                   tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, **SMALL)
    return transformers.LlamaForCausalLM(cfg)


def arch_qwen2(folder):
    n = train_bpe(folder, "qwen")
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    # padded vocabulary, as Qwen's is: the converter writes [PAD<i>] for the ids the tokenizer lacks
    cfg = transformers.Qwen2Config(vocab_size=n + 6, intermediate_size=64, rms_norm_eps=1e-6, rope_theta=1000000.0,
                                   tie_word_embeddings=True, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                                   bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), **SMALL)
    return transformers.Qwen2ForCausalLM(cfg)


def arch_qwen3(folder):
    n = train_bpe(folder, "qwen")
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    cfg = transformers.Qwen3Config(vocab_size=n, intermediate_size=64, head_dim=16, rms_norm_eps=1e-6,
                                   rope_theta=1000000.0, tie_word_embeddings=False,
                                   eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), **SMALL)
    return transformers.Qwen3ForCausalLM(cfg)


def arch_qwen3_moe(folder):
    n = train_bpe(folder, "qwen")
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    cfg = transformers.Qwen3MoeConfig(vocab_size=n, intermediate_size=64, moe_intermediate_size=32, num_experts=4,
                                      num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[], head_dim=8,
                                      norm_topk_prob=True, rms_norm_eps=1e-6, rope_theta=1000000.0,
                                      tie_word_embeddings=False, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                                      **SMALL)
    return transformers.Qwen3MoeForCausalLM(cfg)


def arch_qwen2_moe(folder):
    n = train_bpe(folder, "qwen")
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    cfg = transformers.Qwen2MoeConfig(vocab_size=n, intermediate_size=64, moe_intermediate_size=32,
                                      shared_expert_intermediate_size=64, num_experts=4, num_experts_per_tok=2,
                                      decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=False,
                                      rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False,
                                      eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), **SMALL)
    return transformers.Qwen2MoeForCausalLM(cfg)


def arch_gemma2(folder):
    n = train_spm(folder, "gemma")
    spm_tokenizer_config(folder, "gemma", n)
    cfg = transformers.Gemma2Config(vocab_size=n, intermediate_size=64, head_dim=8, query_pre_attn_scalar=8,
                                    sliding_window=16, rms_norm_eps=1e-6, pad_token_id=0, eos_token_id=1,
                                    bos_token_id=2, **SMALL)
    return transformers.Gemma2ForCausalLM(cfg)


def arch_gemma3(folder):
    n = train_spm(folder, "gemma")
    spm_tokenizer_config(folder, "gemma", n)
    cfg = transformers.Gemma3TextConfig(vocab_size=n, intermediate_size=64, head_dim=8, query_pre_attn_scalar=8,
                                        sliding_window=16, rms_norm_eps=1e-6, pad_token_id=0, eos_token_id=1,
                                        bos_token_id=2, **SMALL)
    return transformers.Gemma3ForCausalLM(cfg)


def arch_phi3(folder):
    n = train_spm(folder, "phi3")
    spm_tokenizer_config(folder, "phi3", n)
    cfg = transformers.Phi3Config(vocab_size=n + 5, intermediate_size=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                                  original_max_position_embeddings=128, tie_word_embeddings=False,
                                  bos_token_id=1, eos_token_id=n, pad_token_id=n,
                                  **dict(SMALL, num_key_value_heads=4))
    return transformers.Phi3ForCausalLM(cfg)


def arch_gpt2(folder):
    n = train_bpe(folder, "gpt2")
    cfg = transformers.GPT2Config(vocab_size=n, n_embd=HIDDEN, n_layer=2, n_head=4, n_positions=128, n_ctx=128,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def arch_starcoder2(folder):
    n = train_bpe(folder, "gpt2")
    cfg = transformers.Starcoder2Config(vocab_size=n, intermediate_size=64, norm_epsilon=1e-5, rope_theta=100000.0,
                                        use_bias=True, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
                                        sliding_window=None, **SMALL)
    return transformers.Starcoder2ForCausalLM(cfg)


def arch_stablelm(folder):
    n = train_bpe(folder, "gpt2")
    cfg = transformers.StableLmConfig(vocab_size=n, intermediate_size=64, layer_norm_eps=1e-5, rope_theta=10000.0,
                                      partial_rotary_factor=0.5, use_qkv_bias=True, use_parallel_residual=False,
                                      tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, **SMALL)
    return transformers.StableLmForCausalLM(cfg)


def arch_nemotron(folder):
    n = train_spm(folder, "llama")
    spm_tokenizer_config(folder, "llama", n)
    cfg = transformers.NemotronConfig(vocab_size=n, intermediate_size=64, norm_eps=1e-5, rope_theta=10000.0,
                                      partial_rotary_factor=0.25, tie_word_embeddings=False, bos_token_id=1,
                                      eos_token_id=2, head_dim=HIDDEN // 4, **SMALL)
    return transformers.NemotronForCausalLM(cfg)


def arch_falcon(folder):
    # Falcon-7B's shape: multi-query attention, parallel attention and MLP, no biases. (Falcon-40B/180B's
    # new decoder architecture is a GGUF transformers cannot load: see docs/GGUF.md.)
    n = train_bpe(folder, "gpt2")
    cfg = transformers.FalconConfig(vocab_size=n, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                                    layer_norm_epsilon=1e-5, parallel_attn=True, bias=False, alibi=False,
                                    new_decoder_architecture=False, multi_query=True,
                                    max_position_embeddings=2048, rope_theta=10000.0, bos_token_id=0,
                                    eos_token_id=0, tie_word_embeddings=True)
    return transformers.FalconForCausalLM(cfg)


def falcon_config(config):
    # as Falcon-7B's config.json has it: multi_query, no num_kv_heads
    config.pop("num_kv_heads", None)


ARCHS = {
    # name: (builder, converter pre-tokenizer name, types)
    "llama": (arch_llama, None, ["f16", "bf16", "q8_0", "q4_k", "q6_k"]),
    "qwen2": (arch_qwen2, "qwen2", ["f16", "q8_0"]),
    "qwen3": (arch_qwen3, "qwen2", ["bf16", "q8_0"]),
    "gemma2": (arch_gemma2, None, ["bf16", "q8_0"]),
    "gemma3": (arch_gemma3, None, ["f16", "q8_0"]),
    "phi3": (arch_phi3, None, ["f16", "q8_0"]),
    "gpt2": (arch_gpt2, "gpt-2", ["f16", "q8_0"]),
    "qwen3_moe": (arch_qwen3_moe, "qwen2", ["f16", "q8_0"]),
    "qwen2_moe": (arch_qwen2_moe, "qwen2", ["q8_0"]),
    "starcoder2": (arch_starcoder2, "gpt-2", ["f16", "q8_0"]),
    "stablelm": (arch_stablelm, "gpt-2", ["f16", "q8_0"]),
    "nemotron": (arch_nemotron, None, ["bf16", "q8_0"]),
    "falcon": (arch_falcon, "falcon", ["f16", "q8_0"]),
}

# config.json as real checkpoints of the family have it (before conversion)
CONFIG_EDITS = {"falcon": falcon_config}

CONVERT = r"""
import sys, runpy
sys.path.insert(0, {root!r})
import conversion.base as base
pre = {pre!r}
if pre is not None:
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
# The converter reads config.json through transformers' AutoConfig, whose FalconConfig fills
# num_kv_heads with num_attention_heads where the file has none (Falcon-7B: multi_query), and
# then splits the fused QKV by that: give it what the file means, one KV head.
_load = base.ModelBase.load_hparams
def load_hparams(dir_model, *args, **kwargs):
    c = _load(dir_model, *args, **kwargs)
    if c.get("model_type") == "falcon" and c.get("multi_query") and not c.get("new_decoder_architecture"):
        c["num_kv_heads"] = 1
    return c
base.ModelBase.load_hparams = staticmethod(load_hparams)
sys.argv = ["convert_hf_to_gguf.py"] + {args!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def convert(hf_dir: Path, pre, outtype: str, out: Path):
    code = CONVERT.format(root=str(LLAMA_CPP), pre=pre, script=str(LLAMA_CPP / "convert_hf_to_gguf.py"),
                          args=[str(hf_dir), "--outtype", outtype, "--outfile", str(out)])
    run = subprocess.run([sys.executable, "-c", code], cwd=str(LLAMA_CPP), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    if run.returncode != 0:
        sys.exit(f"convert_hf_to_gguf.py failed on {hf_dir}:\n{run.stderr[-3000:]}")


def quantize(src: Path, ty: str, out: Path) -> bool:
    if not Path(LLAMA_QUANTIZE).is_file():
        print(f"  no llama-quantize at {LLAMA_QUANTIZE}: {out.name} not made")
        return False
    subprocess.run([LLAMA_QUANTIZE, "--pure", str(src), str(out), ty.upper()], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return True


# ---------------------------------------------------------------- references


def metadata(path: Path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return {key: field.contents() for key, field in reader.fields.items()}


def fixes_qwen3(meta):
    # transformers' qwen3 mapping omits attention.key_length: Qwen3Config's default head_dim (128)
    # applies, and a model whose head_dim is not 128 gets modules of the wrong size.
    return {"head_dim": meta["qwen3.attention.key_length"]}


def fixes_gpt2(meta):
    # transformers' gpt2 mapping writes context_length to `n_ctx` and feed_forward_length to
    # `feed_forward_length`, neither of which GPT2Config reads: it builds n_positions (1024) and
    # n_inner (4 * n_embd) from its defaults.
    return {"n_positions": meta["gpt2.context_length"], "n_inner": meta["gpt2.feed_forward_length"]}


def fixes_qwen3_moe(meta):
    # transformers' qwen3_moe mapping omits expert_feed_forward_length: Qwen3MoeConfig's default
    # moe_intermediate_size (768) applies and the experts get the wrong size.
    return {"moe_intermediate_size": meta["qwen3moe.expert_feed_forward_length"]}


def fixes_qwen2_moe(meta):
    # the same for qwen2_moe, and its shared expert's size too (defaults 1408 and 5632)
    return {"moe_intermediate_size": meta["qwen2moe.expert_feed_forward_length"],
            "shared_expert_intermediate_size": meta["qwen2moe.expert_shared_feed_forward_length"]}


def fixes_starcoder2(meta):
    # transformers' starcoder2 mapping omits rope.freq_base: the default rope_theta (10000) applies;
    # StarCoder2 models use 1e5 to 1e6.
    return {"rope_theta": meta["starcoder2.rope.freq_base"]}


def partial_rotary(meta, arch):
    # rope.dimension_count is mapped to nothing: the class default factor applies (stablelm 0.25,
    # nemotron 0.5) whatever the model's own.
    head_dim = meta.get(f"{arch}.attention.key_length") or (
        meta[f"{arch}.embedding_length"] // meta[f"{arch}.attention.head_count"])
    return meta[f"{arch}.rope.dimension_count"] / head_dim


def fixes_stablelm(meta):
    return {"partial_rotary_factor": partial_rotary(meta, "stablelm")}


def fixes_nemotron(meta):
    # and no attention.key_length: head_dim is hidden / heads (Minitron-8B: 4096 / 48, not 128)
    return {"partial_rotary_factor": partial_rotary(meta, "nemotron"),
            "head_dim": meta["nemotron.attention.key_length"]}


FIXES = {"qwen3": fixes_qwen3, "gpt2": fixes_gpt2, "qwen3_moe": fixes_qwen3_moe, "qwen2_moe": fixes_qwen2_moe,
         "starcoder2": fixes_starcoder2, "stablelm": fixes_stablelm, "nemotron": fixes_nemotron}

# Config keys transformers 5 keeps in config.rope_parameters, not as attributes.
ROPE_KEYS = ("rope_theta", "partial_rotary_factor")


def apply_fixes(config, fixes):
    for key, value in fixes.items():
        if key in ROPE_KEYS:
            config.rope_parameters[key] = value
        else:
            setattr(config, key, value)


def patch_qwen2moe_shared_gate():
    """transformers' Qwen2MoeTensorProcessor adds an axis to ffn_gate_inp_shexp whatever its rank;
    llama.cpp now writes it 2-D ([1, H]), which becomes [1, 1, H] and the model rejects it. The
    reference is transformers with the axis added to a 1-D tensor only (what the class expects)."""
    import transformers.modeling_gguf_pytorch_utils as g

    original = g.Qwen2MoeTensorProcessor.process
    if getattr(original, "_gyrofs_patched", False):
        return

    def process(self, weights, name, **kwargs):
        if "ffn_gate_inp_shexp" in name and weights.ndim == 2:
            return g.GGUFTensor(weights, name, {})
        return original(self, weights, name, **kwargs)

    process._gyrofs_patched = True
    g.Qwen2MoeTensorProcessor.process = process


LOADER_PATCHES = {"qwen2_moe": patch_qwen2moe_shared_gate}


def references(folder: Path, name: str, arch: str):
    """What transformers makes of folder/name (with FIXES[arch] on its config, where its
    loader gets the config wrong)."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    fixes = FIXES[arch](metadata(folder / name)) if arch in FIXES else {}
    if arch in LOADER_PATCHES:
        LOADER_PATCHES[arch]()
    kwargs = {}
    if fixes:
        config = transformers.AutoConfig.from_pretrained(folder, gguf_file=name)
        apply_fixes(config, fixes)
        kwargs["config"] = config
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16, **kwargs)
    state = model.state_dict()
    seen, tensors = {}, {}
    for key, value in state.items():
        ptr = (value.data_ptr(), tuple(value.shape), value.dtype)
        if ptr in seen:
            continue  # a tied duplicate (save_pretrained leaves it out)
        seen[ptr] = key
        tensors[key] = value.detach().contiguous().clone()
    config = {
        "gguf": load_gguf_checkpoint(str(folder / name), return_tensors=False)["config"],
        "fixes": fixes,
        "to_dict": model.config.to_dict(),
    }
    # which file it came from (and where: the fixtures are byte-reproducible); config.json has no
    # quantization config
    config["to_dict"].pop("quantization_config", None)
    config["to_dict"].pop("_name_or_path", None)
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        for f in sorted(os.listdir(tmp)):
            text = (Path(tmp) / f).read_text()
            files[f] = json.loads(text) if f.endswith(".json") else text
    return tensors, config, {"class": type(tok).__name__, "files": files, "cases": tokenizer_cases(tok, name)}


def tokenizer_cases(tok, name):
    """Encodings and decodings of the test strings (and a check that the saved tokenizer agrees)."""
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        again = transformers.AutoTokenizer.from_pretrained(tmp)
    for text in TESTS:
        if again(text)["input_ids"] != tok(text)["input_ids"] or again.decode(tok(text)["input_ids"]) != tok.decode(
            tok(text)["input_ids"]
        ):
            print(f"  ! {name}: the saved tokenizer does not encode/decode {text!r} as the GGUF one does")
        ids = tok(text)["input_ids"]
        plain = tok(text, add_special_tokens=False)["input_ids"]
        cases.append({
            "text": text,
            "ids": ids,
            "ids_no_special": plain,
            "decoded": tok.decode(ids),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        })
    return cases


def check_against_original(model, tensors, name):
    """Each reference tensor is the original weight, up to the GGUF type's rounding: a
    transformers loader that puts a tensor in the wrong place or layout shows here."""
    original = model.state_dict()
    tol = 0.1 if "q4" in name else 0.05 if ("q6" in name or "q8" in name) else 0.02
    for key, value in tensors.items():
        if key not in original:
            print(f"  ! {name}: {key} is not in the HF model")
            continue
        want = original[key].float()
        if tuple(want.shape) != tuple(value.shape):
            print(f"  ! {name}: {key} has shape {tuple(value.shape)}, the HF model {tuple(want.shape)}")
            continue
        err = (value.float() - want).abs().max().item() / max(want.abs().max().item(), 1e-6)
        if err > tol:
            print(f"  ! {name}: {key} differs from the original weight (relative error {err:.3g})")
    missing = set(original) - set(tensors)
    tied = {k for k in missing if k == "lm_head.weight" and model.config.tie_word_embeddings}
    if missing - tied:
        print(f"  ! {name}: missing {sorted(missing - tied)}")


def canonical(value):
    return json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False, default=str) + "\n"


def make(arch: str):
    builder, pre, types = ARCHS[arch]
    if MATRIX:
        types = MATRIX_TYPES
    print(arch)
    with tempfile.TemporaryDirectory() as tmp:
        hf = Path(tmp) / "hf"
        seed(1234)
        model = builder(hf)
        randomize(model, 99)
        model.save_pretrained(hf)
        model.config.save_pretrained(hf)
        if arch in CONFIG_EDITS:
            config = json.loads((hf / "config.json").read_text())
            CONFIG_EDITS[arch](config)
            (hf / "config.json").write_text(json.dumps(config, indent=1))
        made = []
        f16 = Path(tmp) / f"{arch}-f16.gguf"
        convert(hf, pre, "f16", f16)
        for ty in types:
            out = OUT / f"{arch}-{ty}.gguf"
            if ty in ("q4_k", "q6_k"):
                if not quantize(f16, ty, out):
                    continue
            elif ty == "f16":
                shutil.copy(f16, out)
            else:
                convert(hf, pre, ty, out)
            made.append(out.name)
        config_ref = tok_ref = None
        for name in made:
            tensors, config, tokref = references(OUT, name, arch)
            save_file(tensors, str(OUT / name.replace(".gguf", ".expected.safetensors")), metadata={"format": "pt"})
            if config_ref is None:
                config_ref, tok_ref = config, tokref
            else:
                assert canonical(config) == canonical(config_ref), f"{name}: config differs between types"
                assert canonical(tokref) == canonical(tok_ref), f"{name}: tokenizer differs between types"
            print(f"  {name}: {len(tensors)} tensors")
            check_against_original(model, tensors, name)
        (OUT / f"{arch}.config.json").write_text(canonical(config_ref))
        (OUT / f"{arch}.tokenizer.json").write_text(canonical(tok_ref))


# ---------------------------------------------------------------- gpt-oss

GPT_OSS_NOTE = (
    "transformers 5.24 cannot load a gpt-oss GGUF written by llama.cpp: its rope.scaling reader "
    "indexes the wrong part of each GGUF field and raises, and its GptOssTensorProcessor is keyed "
    "'gpt_oss' while the file says 'gpt-oss' (and expects tensor names llama.cpp does not write). "
    "The references are therefore the original Hugging Face model: its state dict as transformers "
    "loads it (MXFP4 experts dequantized on CPU), its config, its tokenizer."
)


def make_gpt_oss():
    """gpt-oss: a tiny model in the Hugging Face MXFP4 layout (random blocks and scales, as the
    released checkpoints store experts), converted by llama.cpp (which repacks MXFP4 losslessly);
    the reference is transformers' own load of that original folder."""
    arch = "gpt_oss"
    print(arch)
    with tempfile.TemporaryDirectory() as tmp:
        hf = Path(tmp) / "hf"
        seed(1234)
        n = train_bpe(hf, "gpt2")
        rope = {"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                "original_max_position_embeddings": 64, "rope_theta": 150000.0}
        cfg = transformers.GptOssConfig(
            vocab_size=n, hidden_size=64, head_dim=16, num_attention_heads=4, num_key_value_heads=2,
            num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2, intermediate_size=64,
            sliding_window=8, max_position_embeddings=256, rms_norm_eps=1e-5, rope_parameters=rope,
            tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = transformers.GptOssForCausalLM(cfg)
        randomize(model, 99)
        state = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
        g = torch.Generator().manual_seed(7)
        experts, hidden, inter = 4, 64, 64
        for layer in range(2):
            e = f"model.layers.{layer}.mlp.experts."
            del state[e + "gate_up_proj"], state[e + "down_proj"]
            u8 = lambda lo, hi, *shape: torch.randint(lo, hi, shape, generator=g, dtype=torch.uint8)  # noqa: E731
            state[e + "gate_up_proj_blocks"] = u8(0, 256, experts, 2 * inter, hidden // 32, 16)
            state[e + "gate_up_proj_scales"] = u8(119, 125, experts, 2 * inter, hidden // 32)
            state[e + "down_proj_blocks"] = u8(0, 256, experts, hidden, inter // 32, 16)
            state[e + "down_proj_scales"] = u8(119, 125, experts, hidden, inter // 32)
        save_file(state, str(hf / "model.safetensors"), metadata={"format": "pt"})
        config = cfg.to_dict()
        config["architectures"] = ["GptOssForCausalLM"]
        config["quantization_config"] = {
            "quant_method": "mxfp4",
            "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                       "model.embed_tokens", "lm_head"],
        }
        (hf / "config.json").write_text(json.dumps(config, indent=1))
        name = f"{arch}-bf16.gguf"
        convert(hf, "gpt-2", "bf16", OUT / name)

        original = transformers.AutoModelForCausalLM.from_pretrained(hf, dtype=torch.bfloat16)
        tensors = {k: v.detach().contiguous().clone() for k, v in original.state_dict().items()}
        # FP4 code 0b1000 is -0.0 in transformers' table and +0.0 in ggml's (kvalues_mxfp4 holds
        # integers): the GGUF file says +0.0, and so does every GGUF reader. The only change.
        for k in tensors:
            if k.endswith(("experts.gate_up_proj", "experts.down_proj")):
                tensors[k] = tensors[k] + 0.0
        save_file(tensors, str(OUT / name.replace(".gguf", ".expected.safetensors")), metadata={"format": "pt"})
        meta = metadata(OUT / name)
        to_dict = original.config.to_dict()
        to_dict.pop("quantization_config", None)
        to_dict.pop("_name_or_path", None)
        golden = {"note": GPT_OSS_NOTE, "gguf": gpt_oss_loader_config(meta), "fixes": fixes_gpt_oss(meta),
                  "to_dict": to_dict}
        tok = transformers.AutoTokenizer.from_pretrained(hf)
        tokref = {"class": type(tok).__name__, "files": None, "cases": tokenizer_cases(tok, name)}
        (OUT / f"{arch}.config.json").write_text(canonical(golden))
        (OUT / f"{arch}.tokenizer.json").write_text(canonical(tokref))
        print(f"  {name}: {len(tensors)} tensors")


def gpt_oss_loader_config(meta):
    """The dict transformers' GGUF loader derives for gpt_oss, had it not raised: its generic rules
    (model_type, tie_word_embeddings, token ids, vocab size) and its GGUF_CONFIG_MAPPING table."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    table = GGUF_CONFIG_MAPPING["gpt_oss"]
    c = {"model_type": "gpt_oss", "tie_word_embeddings": False}
    for key, value in meta.items():
        if key.startswith("gpt-oss.") and table.get(key[len("gpt-oss."):]):
            c[table[key[len("gpt-oss."):]]] = value
        hf = {"tokenizer.ggml.bos_token_id": "bos_token_id", "tokenizer.ggml.eos_token_id": "eos_token_id",
              "tokenizer.ggml.unknown_token_id": "unk_token_id",
              "tokenizer.ggml.padding_token_id": "pad_token_id"}.get(key)
        if hf:
            c[hf] = value
    c.setdefault("vocab_size", len(meta["tokenizer.ggml.tokens"]))
    return c


def fixes_gpt_oss(meta):
    # head_dim (attention.key_length; hidden / heads is not it in gpt-oss-20b: 2880 / 64), the
    # sliding window (written as attention.sliding_window, which the table does not name), and
    # YaRN in the form gpt-oss's own configs have it (truncate: false is not in the GGUF).
    rope = {"rope_type": meta["gpt-oss.rope.scaling.type"], "factor": meta["gpt-oss.rope.scaling.factor"],
            "original_max_position_embeddings": meta["gpt-oss.rope.scaling.original_context_length"],
            "beta_fast": meta["gpt-oss.rope.scaling.yarn_beta_fast"],
            "beta_slow": meta["gpt-oss.rope.scaling.yarn_beta_slow"], "truncate": False}
    # rms_norm_eps: the shortest decimal of the file's f32 (1e-05), which is what the original had.
    eps = float(str(np.float32(meta["gpt-oss.attention.layer_norm_rms_epsilon"])))
    return {"head_dim": meta["gpt-oss.attention.key_length"],
            "sliding_window": meta["gpt-oss.attention.sliding_window"], "rope_scaling": rope,
            "rms_norm_eps": eps}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    archs = sys.argv[1:] or list(ARCHS) + ([] if MATRIX else ["gpt_oss"])
    for arch in archs:
        if arch == "gpt_oss":
            make_gpt_oss()
        else:
            make(arch)


if __name__ == "__main__":
    main()
