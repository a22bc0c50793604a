#!/usr/bin/env python3
"""Fixtures for the gguf/ view: tiny random Hugging Face models, and what
llama.cpp's own converter writes for each of them.

Writes tests/data/gguf-out/ (GGUF_OUT_DIR to write elsewhere):
- NAME/: a tiny random Hugging Face model folder (config.json, model.safetensors,
  tokenizer files, generation_config.json), saved by transformers' save_pretrained,
  with a tiny tokenizer of the family it uses, trained here: SentencePiece
  (`tokenizer.model`) for llama/mistral/mixtral/gemma/phi3, byte-level BPE with the
  family's real split regex (`tokenizer.json`) for qwen/gpt2/gpt-oss;
- NAME.expected.json: what `convert_hf_to_gguf.py NAME --outtype T` writes, for T in
  f32, f16, bf16, q8_0, read back with gguf-py: every key/value but the authorship keys
  (general.name and the model card's; docs/GGUF_OUT.md), with its GGUF type, and every
  tensor's name, type, dims, offset in the data section and the SHA-256 of its bytes.
  tests/gguf_out.rs mounts NAME and compares gguf/model-T.gguf with it.

The converter is llama.cpp's, as vendored in the llama-cpp-python 0.3.36 source package
(LLAMA_CPP: its vendor/llama.cpp folder), run unmodified but for one thing: a tokenizer
trained here has no entry in its table of pre-tokenizer hashes, so it would refuse it;
`--pre NAME` tells it the name (the one whose split rules the tokenizer has, which is
what gyrofs chooses). With KEEP=DIR the converter's GGUF files are kept there
(scripts/check_gguf_out.py loads them with llama.cpp).

Run: LLAMA_CPP=.../vendor/llama.cpp /opt/pyref/bin/python scripts/make_gguf_out.py [NAME ...]
(torch, transformers 5.24, sentencepiece, tokenizers, gguf, numpy.)
Deterministic for a given set of package versions. Model shapes follow the research of
docs/GGUF_OUT.md, made smaller: hidden 32, 2 layers, 4 heads (2 KV heads), head_dim 8
(llama-256: hidden 256, for the k-quants' 256-value blocks).
"""

import hashlib
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

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("GGUF_OUT_DIR") or ROOT / "tests" / "data" / "gguf-out")
LLAMA_CPP = Path(os.environ.get("LLAMA_CPP", "/work/tmp-gguf/llama_cpp_python-0.3.36/vendor/llama.cpp"))
KEEP = os.environ.get("KEEP")
TYPES = ["f32", "f16", "bf16", "q8_0"]

TEXT = """The quick brown fox jumps over the lazy dog. A tiny model reads a tiny book.
Hello world! Hello, hello; hello... 12345 67890 3.14159 2024-06-01 100% #1 @home
def main():\n    print("hi")\n    return 0\n\nfor i in range(10):\n\tx = i * 2
Das Wetter ist schön. Ça va très bien, merci! Ünïcödé façade naïve café.
日本語のテキストです。中文文本。 Русский текст. Emoji: 🙂 🚀 ✅.
It's, I'm, you're, we've, they'll, he'd. THE END, the end, The End.
"""

QWEN_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
O200K = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
         r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
         r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=256)

# Keys not compared (authorship: derived by the converter from the folder name and model card).
AUTHORSHIP = ("general.name", "general.author", "general.version", "general.organization",
              "general.finetune", "general.basename", "general.description", "general.quantized_by",
              "general.license", "general.url", "general.doi", "general.uuid", "general.repo_url",
              "general.tags", "general.languages")
AUTHORSHIP_PREFIXES = ("general.license.", "general.source.", "general.base_model.", "general.dataset.")


def authorship(key):
    return key in AUTHORSHIP or key.startswith(AUTHORSHIP_PREFIXES)


def randomize(model, n=99):
    """Every parameter random (norms too), so no transform hides behind a constant."""
    g = torch.Generator().manual_seed(n)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))


def write_json(p, obj):
    p.write_text(json.dumps(obj, indent=2))


def train_spm(folder, kind):
    import sentencepiece as spm
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "c.txt"
        corpus.write_text(TEXT * 3)
        a = dict(input=str(corpus), model_prefix=str(Path(tmp) / "m"), model_type="bpe", vocab_size=400,
                 byte_fallback=True, character_coverage=0.99, split_digits=True, num_threads=1, minloglevel=2,
                 hard_vocab_limit=False, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
                 normalization_rule_name="identity")
        if kind == "gemma":
            a.update(pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
                     bos_piece="<bos>", unk_piece="<unk>",
                     user_defined_symbols=["<mask>", "<start_of_turn>", "<end_of_turn>"])
        else:
            a.update(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
        spm.SentencePieceTrainer.train(**a)
        shutil.copy(Path(tmp) / "m.model", folder / "tokenizer.model")
    return spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).vocab_size()


def train_bpe(folder, regex, specials, **kw):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    if regex is None:  # GPT-2's byte-level default
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tr = trainers.BpeTrainer(vocab_size=300, min_frequency=2, special_tokens=specials,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT] * 3, tr)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **kw)


def save(model, folder, dtype=torch.bfloat16):
    randomize(model)
    model.to(dtype)
    model.save_pretrained(folder)


# ------------------------------------------------------------------ the models

def llama(name, cls="llama", dtype=torch.bfloat16):
    d = OUT / name
    n = train_spm(d, "llama")
    write_json(d / "tokenizer_config.json", {
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}"})
    common = dict(vocab_size=n, rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, **SMALL)
    if cls == "llama":
        m = transformers.LlamaForCausalLM(transformers.LlamaConfig(intermediate_size=64, rope_theta=10000.0, **common))
    elif cls == "llama-256":
        # Rows of 256 (hidden 256): whole k-quant super-blocks, so the
        # llama-quantize files (scripts/make_gguf_quant.py) hold Q4_K, Q5_K
        # and Q6_K tensors, not only their fallbacks (attn_output's rows of 32,
        # ffn_down's of 16: F16); tied embeddings.
        common.update(hidden_size=256, num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
        m = transformers.LlamaForCausalLM(transformers.LlamaConfig(intermediate_size=16, head_dim=16,
                                                                   rope_theta=10000.0, **common))
    elif cls == "mixtral":
        m = transformers.MixtralForCausalLM(transformers.MixtralConfig(
            intermediate_size=32, rope_theta=1e6, num_local_experts=4, num_experts_per_tok=2, **common))
    save(m, d, dtype)
    return None


def qwen_tok(d):
    fast = train_bpe(d, QWEN_SPLIT, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos_token="<|im_end|>",
                     pad_token="<|endoftext|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.add_tokens(["<think>", "</think>"])
    fast.chat_template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    fast.save_pretrained(d)
    return fast


def qwen(name, cls):
    d = OUT / name
    t = qwen_tok(d)
    ids = dict(eos_token_id=t.convert_tokens_to_ids("<|im_end|>"))
    moe = dict(moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1,
               mlp_only_layers=[], rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=False, **ids, **SMALL)
    if cls == "qwen2":
        cfg = transformers.Qwen2Config(vocab_size=len(t) + 8, intermediate_size=64, rms_norm_eps=1e-6,
                                       rope_theta=1e6, tie_word_embeddings=True,
                                       bos_token_id=t.convert_tokens_to_ids("<|endoftext|>"), **ids, **SMALL)
        m = transformers.Qwen2ForCausalLM(cfg)
    elif cls == "qwen3":
        cfg = transformers.Qwen3Config(vocab_size=len(t), intermediate_size=64, head_dim=8, rms_norm_eps=1e-6,
                                       rope_theta=1e6, tie_word_embeddings=False, **ids, **SMALL)
        m = transformers.Qwen3ForCausalLM(cfg)
    elif cls == "qwen2_moe":
        cfg = transformers.Qwen2MoeConfig(vocab_size=len(t), intermediate_size=64, shared_expert_intermediate_size=64,
                                          norm_topk_prob=False, **moe)
        m = transformers.Qwen2MoeForCausalLM(cfg)
    else:
        cfg = transformers.Qwen3MoeConfig(vocab_size=len(t), intermediate_size=64, head_dim=8, norm_topk_prob=True, **moe)
        m = transformers.Qwen3MoeForCausalLM(cfg)
    save(m, d)
    return "qwen2"


def gemma_tok(d):
    n = train_spm(d, "gemma")
    write_json(d / "tokenizer_config.json", {
        "tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "chat_template": "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"})
    return n


def gemma(name, cls, dtype=torch.bfloat16):
    d = OUT / name
    n = gemma_tok(d)
    common = dict(vocab_size=n, intermediate_size=64, head_dim=8, query_pre_attn_scalar=8, sliding_window=64,
                  rms_norm_eps=1e-6, pad_token_id=0, eos_token_id=1, bos_token_id=2, **SMALL)
    if cls == "gemma2":
        m = transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**common))
    else:
        rope = {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}
        m = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(rope_parameters=rope, **common))
    save(m, d, dtype)
    return None


def phi3(name):
    d = OUT / name
    n = train_spm(d, "llama")
    extra = ["<|endoftext|>", "<|assistant|>", "<|user|>", "<|end|>", "<think>"]
    write_json(d / "added_tokens.json", {t: n + i for i, t in enumerate(extra)})
    write_json(d / "tokenizer_config.json", {
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": False, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<unk>",
        "added_tokens_decoder": {str(n + i): {"content": t, "special": t != "<think>", "lstrip": False,
                                               "rstrip": t == "<|end|>", "normalized": False, "single_word": False}
                                 for i, t in enumerate(extra)},
        "chat_template": "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"})
    # Intermediate 48: ffn_down's rows are not whole Q8_0 blocks (F16 under q8_0).
    cfg = transformers.Phi3Config(vocab_size=n + 5 + 3, intermediate_size=48, rms_norm_eps=1e-5, rope_theta=10000.0,
                                  original_max_position_embeddings=128, tie_word_embeddings=False, bos_token_id=1,
                                  eos_token_id=n, pad_token_id=n, sliding_window=128,
                                  **dict(SMALL, num_key_value_heads=4))
    save(transformers.Phi3ForCausalLM(cfg), d)
    return None


def gpt2(name):
    d = OUT / name
    fast = train_bpe(d, None, ["<|endoftext|>"], bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                     unk_token="<|endoftext|>")
    fast.save_pretrained(d)
    cfg = transformers.GPT2Config(vocab_size=len(fast), n_embd=32, n_layer=2, n_head=4, n_positions=256, n_ctx=256,
                                  bos_token_id=len(fast) - 1, eos_token_id=len(fast) - 1)
    save(transformers.GPT2LMHeadModel(cfg), d, dtype=torch.float32)
    return "gpt-2"


def gpt_oss(name):
    d = OUT / name
    fast = train_bpe(d, O200K, ["<|startoftext|>", "<|return|>", "<|endoftext|>", "<|start|>", "<|end|>",
                                "<|message|>", "<|channel|>"],
                     bos_token="<|startoftext|>", eos_token="<|return|>", pad_token="<|endoftext|>")
    fast.chat_template = "{% for m in messages %}<|start|>{{ m['role'] }}<|message|>{{ m['content'] }}<|end|>{% endfor %}"
    fast.save_pretrained(d)
    rope = {"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
            "original_max_position_embeddings": 64, "rope_theta": 150000.0}
    cfg = transformers.GptOssConfig(vocab_size=len(fast), hidden_size=32, head_dim=8, num_attention_heads=4,
                                    num_key_value_heads=2, num_hidden_layers=2, num_local_experts=4,
                                    num_experts_per_tok=2, intermediate_size=32, sliding_window=8,
                                    max_position_embeddings=256, rms_norm_eps=1e-5, rope_parameters=rope,
                                    tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    m = transformers.GptOssForCausalLM(cfg)
    randomize(m)
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in m.state_dict().items()}
    g = torch.Generator().manual_seed(7)
    E, H, I = 4, 32, 32
    u8 = lambda lo, hi, *s: torch.randint(lo, hi, s, generator=g, dtype=torch.uint8)
    for L in range(2):
        e = f"model.layers.{L}.mlp.experts."
        del state[e + "gate_up_proj"], state[e + "down_proj"]
        state[e + "gate_up_proj_blocks"] = u8(0, 256, E, 2 * I, H // 32, 16)
        state[e + "gate_up_proj_scales"] = u8(119, 125, E, 2 * I, H // 32)
        state[e + "down_proj_blocks"] = u8(0, 256, E, H, I // 32, 16)
        state[e + "down_proj_scales"] = u8(119, 125, E, H, I // 32)
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    c = cfg.to_dict()
    c["architectures"] = ["GptOssForCausalLM"]
    c["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    write_json(d / "config.json", c)
    return "gpt-4o"


MODELS = {
    "llama": lambda: llama("llama"),
    "llama-f32": lambda: llama("llama-f32", dtype=torch.float32),
    "llama-256": lambda: llama("llama-256", "llama-256"),
    "mixtral": lambda: llama("mixtral", "mixtral"),
    "qwen2": lambda: qwen("qwen2", "qwen2"),
    "qwen3": lambda: qwen("qwen3", "qwen3"),
    "qwen2_moe": lambda: qwen("qwen2_moe", "qwen2_moe"),
    "qwen3_moe": lambda: qwen("qwen3_moe", "qwen3_moe"),
    "gemma2": lambda: gemma("gemma2", "gemma2"),
    "gemma2-f16": lambda: gemma("gemma2-f16", "gemma2", dtype=torch.float16),
    "gemma3": lambda: gemma("gemma3", "gemma3"),
    "phi3": lambda: phi3("phi3"),
    "gpt2": lambda: gpt2("gpt2"),
    "gpt_oss": lambda: gpt_oss("gpt_oss"),
}

CONVERT = r"""
import runpy, sys
LLAMA, pre = sys.argv[1], sys.argv[2]
sys.path.insert(0, LLAMA)
import conversion.base as base
orig = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return orig(self, tokenizer)
    except NotImplementedError:
        if pre == "-":
            raise
        return pre
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv = [LLAMA + "/convert_hf_to_gguf.py"] + sys.argv[3:]
runpy.run_path(LLAMA + "/convert_hf_to_gguf.py", run_name="__main__")
"""


def convert(folder, outtype, out, pre):
    subprocess.run([sys.executable, "-c", CONVERT, str(LLAMA_CPP), pre or "-", str(folder),
                    "--outtype", outtype, "--outfile", str(out)], check=True, capture_output=True)


def describe(path):
    """The GGUF file as the test compares it."""
    from gguf import GGUFReader, GGUFValueType
    r = GGUFReader(str(path))
    kv = []
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or authorship(key):
            continue
        t = f.types[0]
        if t == GGUFValueType.ARRAY:
            sub = f.types[1]
            if sub == GGUFValueType.STRING:
                v = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            else:
                v = [f.parts[i].tolist()[0] for i in f.data]
            kv.append([key, f"array:{sub.name.lower()}", v])
        elif t == GGUFValueType.STRING:
            kv.append([key, "string", bytes(f.parts[f.data[0]]).decode("utf-8")])
        else:
            v = f.parts[f.data[0]].tolist()[0]
            kv.append([key, t.name.lower(), v])
    start = r.tensors[0].data_offset if r.tensors else 0
    tensors = [[t.name, int(t.tensor_type), [int(x) for x in t.shape], int(t.data_offset - start),
                hashlib.sha256(np.asarray(t.data).tobytes()).hexdigest()] for t in r.tensors]
    return {"kv": kv, "tensors": tensors}


def main():
    names = sys.argv[1:] or list(MODELS)
    torch.manual_seed(1234)
    for name in names:
        print("make", name, flush=True)
        d = OUT / name
        if d.exists():
            shutil.rmtree(d)
        pre = MODELS[name]()
        for f in d.iterdir():
            f.chmod(0o644)
        expected = {"converter": "llama.cpp as vendored in llama-cpp-python 0.3.36",
                    "transformers": transformers.__version__, "kv": None, "types": {}}
        with tempfile.TemporaryDirectory() as tmp:
            for t in TYPES:
                out = Path(tmp) / f"{name}-{t}.gguf"
                convert(d, t, out, pre)
                got = describe(out)
                # The keys are the same in every type but general.file_type.
                file_type = next(v for k, _, v in got["kv"] if k == "general.file_type")
                kv = [[k, ty, None if k == "general.file_type" else v] for k, ty, v in got["kv"]]
                assert expected["kv"] in (None, kv), f"{name}: keys differ between types"
                expected["kv"] = kv
                expected["types"][t] = {"file_type": file_type, "tensors": got["tensors"]}
                if KEEP:
                    Path(KEEP).mkdir(parents=True, exist_ok=True)
                    shutil.copy(out, Path(KEEP) / out.name)
        text = json.dumps(expected, ensure_ascii=False, separators=(",", ":"))
        (OUT / f"{name}.expected.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
