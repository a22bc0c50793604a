#!/usr/bin/env python3
"""End-to-end check of remote sources with transformers (not part of `cargo
test`: needs torch).

    /opt/pyref/bin/python scripts/check_remote.py
    MOTO_SERVER=/path/to/moto_server /opt/pyref/bin/python scripts/check_remote.py

With MOTO_SERVER (moto's S3 server from `pip install "moto[server]"`, an
S3 implementation independent of gyrofs's fake), the s3:// cases are also
run against it, and a rewritten object must read as EIO.

Starts the offline fake server (scripts/fake_remote.py) with the bundled
fixtures published as a Hub repository, S3 objects and plain HTTP files, then
for each remote source mounts it and a local copy with gyrofs, loads `bf16/`
of both with `AutoModelForCausalLM.from_pretrained` (and one raw file with
`safetensors.safe_open`), and checks that every weight and the logits on a
fixed prompt are bit-identical. The local mounts are checked against the
reference implementations by check_transformers.py, check_torch.py and
check_gguf_hf.py; this script shows that a user's loader sees the same model
through a remote mount. Exits non-zero on any difference.
"""

import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gyrofs_mount import mounted  # noqa: E402

ROOT = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
GYROFS = os.path.join(ROOT, "target", "release", "gyrofs")
DATA = os.path.join(ROOT, "tests", "data")
SHA = "4444444444444444444444444444444444444444"


def bits(t):
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int16)


def start_server(tmp):
    root, hub = os.path.join(tmp, "root"), os.path.join(tmp, "hub")
    bucket = os.path.join(root, "bucket")
    shutil.copytree(os.path.join(DATA, "torch-models", "hf-gpt2-sharded"), os.path.join(bucket, "gpt2-bin"))
    os.makedirs(os.path.join(bucket, "gguf"))
    shutil.copy(os.path.join(DATA, "gguf-models", "llama-q8_0.gguf"), os.path.join(bucket, "gguf"))
    repo = os.path.join(hub, "org", "tiny")
    shutil.copytree(os.path.join(DATA, "gpt-oss-tiny"), os.path.join(repo, "commits", SHA))
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(SHA + "\n")
    port_file = os.path.join(tmp, "port")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "scripts", "fake_remote.py"), "--root", root,
         "--hub-root", hub, "--port-file", port_file],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not (os.path.exists(port_file) and open(port_file).read().endswith("\n")):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the fake server did not start")
        time.sleep(0.05)
    return proc, int(open(port_file).read())


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__stats?log=0", timeout=20) as r:
        return json.load(r)


def start_moto(server, tmp):
    """moto's S3 server with bucket `models` holding the fixtures (uploaded
    with plain PUTs: moto does not check signatures by default)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([server, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(f"{url}/models", method="PUT"), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto_server did not start")
            time.sleep(0.2)
    uploads = [(os.path.join(DATA, "gpt-oss-tiny"), "gpt-oss-tiny"),
               (os.path.join(DATA, "torch-models", "hf-gpt2-sharded"), "gpt2-bin")]
    try:
        for base, prefix in uploads:
            for dp, _, files in os.walk(base):
                for f in files:
                    key = prefix + "/" + os.path.relpath(os.path.join(dp, f), base)
                    put(url, key, open(os.path.join(dp, f), "rb").read())
    except BaseException:
        proc.kill()
        proc.wait(timeout=20)
        raise
    return proc, url


def put_signed(server, url, key, body):
    """Overwrite an object: moto refuses unsigned overwrites, so with boto3
    from moto's own environment (beside `moto_server`)."""
    py = os.path.join(os.path.dirname(server), "python")
    code = ("import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', "
            "aws_access_key_id='x', aws_secret_access_key='x')"
            ".put_object(Bucket='models', Key=sys.argv[2], Body=sys.stdin.buffer.read())")
    subprocess.run([py, "-c", code, url, key], input=body, check=True)


def put(url, key, body):
    req = urllib.request.Request(f"{url}/models/{key}", data=body, method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(req, timeout=30).read()


def moto_checks(server, tmp):
    proc, url = start_moto(server, tmp)
    ok = True
    try:
        cache = os.path.join(tmp, "moto-cache")
        os.environ["AWS_ENDPOINT_URL"] = url
        for remote, local in [("s3://models/gpt-oss-tiny", os.path.join(DATA, "gpt-oss-tiny")),
                              ("s3://models/gpt2-bin", os.path.join(DATA, "torch-models", "hf-gpt2-sharded"))]:
            with mounted(GYROFS, local) as lm, mounted(GYROFS, remote, "--cache-dir", cache) as rm:
                ok = compare(os.path.join(lm, "bf16"), os.path.join(rm, "bf16"), f"moto {remote}") and ok
        # A rewritten object (larger than the block fetched at mount) is EIO.
        body = bytearray(os.urandom(4 << 20))
        header = b'{"w":{"dtype":"U8","shape":[4194304],"data_offsets":[0,4194304]}}'
        header += b" " * (-len(header) % 8)
        blob = len(header).to_bytes(8, "little") + header + bytes(body)
        put(url, "chg/model.safetensors", blob)
        with mounted(GYROFS, "s3://models/chg", "--cache-dir", cache) as rm:
            body[-1] ^= 1
            put_signed(server, url, "chg/model.safetensors", len(header).to_bytes(8, "little") + header + bytes(body))
            try:
                open(os.path.join(rm, "raw", "model.safetensors"), "rb").read()
                print("moto: a rewritten object was read without error")
                ok = False
            except OSError as e:
                print(f"moto: a rewritten object reads as {os.strerror(e.errno)}")
                ok = ok and e.errno == 5
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return ok


def compare(local_dir, remote_dir, what):
    a = AutoModelForCausalLM.from_pretrained(local_dir, dtype=torch.bfloat16)
    b = AutoModelForCausalLM.from_pretrained(remote_dir, dtype=torch.bfloat16)
    sa, sb = a.state_dict(), b.state_dict()
    bad = [k for k in sa if k not in sb or not torch.equal(bits(sa[k]), bits(sb[k]))]
    x = torch.arange(1, 17).reshape(1, -1) % a.config.vocab_size
    same = torch.equal(a(x).logits, b(x).logits)
    print(f"{what}: {len(sa) - len(bad)}/{len(sa)} weights bit-identical, logits identical: {same}")
    del a, b, sa, sb
    gc.collect()
    return not bad and same


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(tmp)
        try:
            url = f"http://127.0.0.1:{port}"
            os.environ.update({
                "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": url, "HF_ENDPOINT": url,
            })
            cache = os.path.join(tmp, "cache")
            cases = [
                ("hf://org/tiny", os.path.join(DATA, "gpt-oss-tiny")),
                (f"hf://org/tiny@{SHA}/original", os.path.join(DATA, "gpt-oss-tiny", "original")),
                ("s3://bucket/gpt2-bin", os.path.join(DATA, "torch-models", "hf-gpt2-sharded")),
                (f"{url}/bucket/gguf/llama-q8_0.gguf", os.path.join(DATA, "gguf-models", "llama-q8_0.gguf")),
            ]
            for remote, local in cases:
                with mounted(GYROFS, local) as lm, mounted(GYROFS, remote, "--cache-dir", cache) as rm:
                    ok = compare(os.path.join(lm, "bf16"), os.path.join(rm, "bf16"), remote) and ok
                    raw = "raw/model.safetensors"
                    with safe_open(os.path.join(lm, raw), "pt") as fa, safe_open(os.path.join(rm, raw), "pt") as fb:
                        same = fa.keys() == fb.keys() and all(
                            torch.equal(fa.get_tensor(k).view(torch.uint8).flatten(),
                                        fb.get_tensor(k).view(torch.uint8).flatten()) for k in fa.keys())
                    print(f"{remote}: safe_open({raw}) identical: {same}")
                    ok = ok and same
            print(f"server: {stats(port)}")
            if os.environ.get("MOTO_SERVER"):
                ok = moto_checks(os.environ["MOTO_SERVER"], tmp) and ok
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    print("all good" if ok else "DIFFERENCES")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
