"""The prepared GPU check: run on a lent CUDA machine, prints a Markdown table.

Needs only torch and numpy (the GPU image has both); flexcache is imported
from the working tree. It checks the torch GPU index against an exact float64
search, times it against the same index on the CPU in the same run, and checks
the seeded noise and the codec on CUDA. Usage (repository root):

    PYTHONPATH=. python3 bench/gpu/check.py [--out results.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

from flexcache.engine.index import TorchFlatIndex
from flexcache.engine.noise import seeded_noise
from flexcache.kernels.codec import LosslessCodec

DIM = 384


def unit(n: int, seed: int, device: str) -> torch.Tensor:
    x = torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed)).to(device)
    return x / x.norm(dim=1, keepdim=True)


def median_ms(fn, repeats: int, cuda: bool) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", help="also write the table here")
    parser.add_argument("--smoke-on-cpu", action="store_true",
                        help="without CUDA, run the same checks on the CPU (to test this script, not to report)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke_on_cpu:
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 1
    dev = "cuda" if cuda else "cpu"
    device_name = torch.cuda.get_device_name() if cuda else "CPU smoke run (not a GPU result)"
    rows = []
    ok = True
    for n in (10_000, 100_000, 1_000_000):
        vectors, queries = unit(n, 0, "cpu"), unit(8, 1, "cpu")
        ids = torch.arange(n)
        exact = (queries.double() @ vectors.double().T).topk(4, dim=1).indices
        gpu = TorchFlatIndex(DIM, dev)
        gpu.add(ids, vectors)
        _, found = gpu.search(queries.to(dev), 4)
        agree = bool(torch.equal(found.cpu(), exact))
        ok &= agree
        cpu = TorchFlatIndex(DIM, "cpu")
        cpu.add(ids, vectors)
        q1_gpu, q1_cpu = queries[:1].to(dev), queries[:1]
        gpu_ms = median_ms(lambda: gpu.search(q1_gpu, 4), 50, cuda=cuda)
        cpu_ms = median_ms(lambda: cpu.search(q1_cpu, 4), 10, cuda=False)
        rows.append(f"| torch index search, {n:,} rows, 1 query, k=4 | {gpu_ms:.3f} ms | {cpu_ms:.3f} ms "
                    f"| {cpu_ms / gpu_ms:.1f}x | top-4 equals exact fp64: {agree} |")
    noise_same = torch.equal(seeded_noise((16, 21, 60, 104), 7, dev).cpu(), seeded_noise((16, 21, 60, 104), 7))
    ok &= noise_same
    rows.append(f"| seeded noise, 16x21x60x104, CUDA == CPU | | | | {noise_same} |")
    latent = torch.randn(16, 21, 60, 104, device=dev)
    codec = LosslessCodec()
    blob = codec.encode(latent, seed=7)
    exact_trip = torch.equal(codec.decode(blob, device=dev), latent)
    ok &= exact_trip
    enc_ms = median_ms(lambda: codec.encode(latent, seed=7), 10, cuda=cuda)
    dec_ms = median_ms(lambda: codec.decode(blob, device=dev), 10, cuda=cuda)
    rows.append(f"| lossless codec, 16x21x60x104 fp32 (8.4 MB), encode / decode | {enc_ms:.2f} / {dec_ms:.2f} ms "
                f"| | | bit-exact: {exact_trip} |")
    table = "\n".join([
        f"GPU check, {time.strftime('%Y-%m-%d')}, {device_name}, torch {torch.__version__}, "
        f"{platform.python_version()}",
        "",
        "| what | GPU | CPU (same run) | CPU / GPU | check |",
        "|---|---|---|---|---|",
        *rows,
    ])
    print(table)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(table + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
