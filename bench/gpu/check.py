"""The prepared GPU check: run on a lent CUDA machine, prints a Markdown table.

Needs only torch and numpy (the GPU image has both); flexcache is imported
from the working tree. It checks the torch GPU index against an exact float64
search (timed against the same index on the CPU in the same run), the Triton
codec kernels against the torch reference (timed against a device copy),
tl.randn on the device against the CPU reference, nvCOMP per algorithm (when
its wheels were carried) including CPU decoding of GPU-written streams, the
seeded noise and lossless codec on CUDA, and a FlexCache insert and HBM hit
under the torch profiler: the hit must copy nothing from device to host. Usage (repository root):

    PYTHONPATH=. python3 bench/gpu/check.py [--out results.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

from flexcache.codec.latent import LosslessCodec
from flexcache.engine.index import TorchFlatIndex
from flexcache.kernels.noise import seeded_noise

DIM = 384


def unit(n: int, seed: int, device: str) -> torch.Tensor:
    x = torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed)).to(device)
    return x / x.norm(dim=1, keepdim=True)


def median_ms(fn, repeats: int, cuda: bool) -> float:
    for _ in range(3 if cuda else 1):
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


def kernel_rows(dev: str, cuda: bool) -> list[str]:
    """Triton codec kernels vs the torch reference, timed against a device copy."""
    from flexcache.kernels import ops, reference

    rows = []
    shape = (16, 21, 60, 104)
    nbytes = 16 * 21 * 60 * 104 * 4
    backend = "triton" if cuda else "torch"
    noise_gpu = ops.randn(7, shape, dev, backend=backend)
    noise_cpu = reference.philox_randn(7, noise_gpu.numel()).reshape(shape)
    noise_diff = float((noise_gpu.cpu() - noise_cpu).abs().max())
    rows.append(f"| tl.randn on device vs CPU reference, 16x21x60x104 | | | | max abs diff {noise_diff:.1e} "
                f"(<= 1e-6: {noise_diff <= 1e-6}) |")
    latent = 0.8 * noise_gpu + 0.2 * torch.randn(shape, device=dev).cumsum(-1) / 20
    reps = 20 if cuda else 1  # the CPU smoke run only proves the script works
    copy_ms = median_ms(lambda: latent.clone(), reps, cuda)
    rows.append(f"| device copy of the fp32 latent (8.4 MB) | {copy_ms:.3f} ms | | | "
                f"{2 * nbytes / copy_ms / 1e6:.0f} GB/s read+write |")
    for bits in (2, 4, 8):
        for delta in (False, True):
            kwargs = dict(seed=7, noise_scale=0.8, bits=bits, block=256, temporal_delta=delta)
            packed, scales = ops.encode(latent, backend=backend, **kwargs)
            packed_ref, scales_ref = ops.encode(latent.cpu(), backend="torch", **kwargs)
            q_gpu = reference.unpack_bits(packed.cpu(), bits, packed.numel() * 8 // bits)
            q_ref = reference.unpack_bits(packed_ref, bits, packed_ref.numel() * 8 // bits)
            mismatch = int((q_gpu != q_ref).sum())
            decoded = ops.decode(packed, scales, shape, backend=backend, **kwargs)
            decoded_ref = ops.decode(packed.cpu(), scales.cpu(), shape, backend="torch", **kwargs)
            diff = float((decoded.cpu() - decoded_ref).abs().max())
            enc_ms = median_ms(lambda: ops.encode(latent, backend=backend, **kwargs), reps, cuda)
            dec_ms = median_ms(lambda: ops.decode(packed, scales, shape, backend=backend, **kwargs), reps, cuda)
            rows.append(
                f"| {backend} encode / decode, {bits} bits, residual, delta={delta} | {enc_ms:.3f} / {dec_ms:.3f} ms "
                f"| | copy/encode {copy_ms / enc_ms:.0%}, copy/decode {copy_ms / dec_ms:.0%} "
                f"| ints differing from reference: {mismatch} of {q_ref.numel()}; decode max diff {diff:.1e} |"
            )
    return rows


def nvcomp_rows(dev: str, cuda: bool) -> list[str]:
    """nvCOMP compress/decompress per algorithm on 4-bit packed latent bytes; CPU decodes GPU output."""
    from flexcache.codec import lossless
    from flexcache.kernels import ops

    rows = []
    shape = (16, 21, 60, 104)
    latent = 0.8 * ops.randn(7, shape, dev) + 0.2 * torch.randn(shape, device=dev)
    packed, _ = ops.encode(latent, seed=7, noise_scale=0.8, bits=4, block=256)
    for algorithm in lossless.ALGORITHMS:
        if not lossless.available(algorithm, dev):
            rows.append(f"| lossless {algorithm} on {dev} | | | | not available here |")
            continue
        blob = lossless.compress(packed, algorithm, chunk_bytes=1 << 16, device=dev)
        reps = 10 if cuda else 1
        enc_ms = median_ms(lambda: lossless.compress(packed, algorithm, chunk_bytes=1 << 16, device=dev), reps, cuda)
        dec_ms = median_ms(lambda: lossless.decompress(blob, device=dev), reps, cuda)
        same = bool(torch.equal(lossless.decompress(blob, device=dev).cpu(), packed.cpu()))
        cross = "-"
        if algorithm in ("zstd", "deflate", "lz4", "none"):
            cross = str(bool(torch.equal(lossless.decompress(blob, device="cpu"), packed.cpu())))
        rows.append(f"| lossless {algorithm} on {dev}, {packed.numel() / 1e6:.1f} MB of 4-bit ints "
                    f"| {enc_ms:.2f} / {dec_ms:.2f} ms | | ratio {packed.numel() / len(blob):.2f} "
                    f"| round trip {same}; CPU decodes it: {cross} |")
    return rows


def store_rows(cuda: bool) -> list[str]:
    """Pinned host pool and HBM tier round trips, and the copy rates they rely on."""
    from flexcache.core.blob import DeviceBlob
    from flexcache.store.host import HostTier

    rows = []
    size = 32 << 20
    key = "gpucheck.0123456789abcdef"
    payload = torch.randint(0, 256, (size,), dtype=torch.uint8)
    host = HostTier(4 * size)
    host.put(key, payload.numpy().tobytes(), b"{}")
    pinned = bool(getattr(host, "pinned", False))
    same = host.get(key) == payload.numpy().tobytes()
    rows.append(f"| host tier, 32 MB blob, pinned={pinned} | | | | round trip {same} |")
    if cuda:
        from flexcache.store.hbm import HBMTier

        to_gpu = host.get(key, device="cuda")
        rows.append(f"| host tier -> CUDA device blob by DMA | | | | {type(to_gpu).__name__}, equal "
                    f"{bool(torch.equal(to_gpu.tensor.cpu(), payload))} |")
        hbm = HBMTier(4 * size)
        hbm.put(key, payload.numpy().tobytes(), b"{}")
        on_device = hbm.get(key, device="cuda")
        kept = DeviceBlob(payload.cuda())
        hbm.put("gpucheck.00000000000000ff", kept)
        kept_again = hbm.get("gpucheck.00000000000000ff", device="cuda").tensor.data_ptr() == kept.tensor.data_ptr()
        rows.append(f"| hbm tier, 32 MB blob | | | | on {on_device.device}, equal "
                    f"{bool(torch.equal(on_device.tensor.cpu(), payload))}; a device blob put is kept, not copied: "
                    f"{kept_again} |")
        pinned_src = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        device_dst = torch.empty(size, dtype=torch.uint8, device="cuda")
        h2d = median_ms(lambda: device_dst.copy_(pinned_src, non_blocking=True), 20, True)
        pageable = median_ms(lambda: device_dst.copy_(payload), 20, True)
        rows.append(f"| pinned H2D / pageable H2D, 32 MB | {h2d:.3f} / {pageable:.3f} ms | | "
                    f"{size / h2d / 1e6:.1f} / {size / pageable / 1e6:.1f} GB/s | |")
        hbm.close()
    host.close()
    return rows


def _memcpys(prof) -> dict[str, int]:
    """Device memcpy events the profiler saw, by direction."""
    counts = {"DtoH": 0, "HtoD": 0, "DtoD": 0}
    for event in prof.events():
        name = event.name
        for direction in counts:
            if "Memcpy" in name and direction in name:
                counts[direction] += 1
    return counts


def hbm_hit_rows(dev: str, cuda: bool) -> tuple[list[str], bool]:
    """FlexCache on an HBM tier: what an insert and a hit copy between host and device (torch profiler).

    The hit (`fetch` of a planned hit) must show no device-to-host copy: the
    blob's headers come from its host head, nvCOMP and the Triton decode read
    the device blob. The plan runs before the profiled region: its scalars (the
    similarity, K) are the only host round trip the design allows.
    """
    from torch.profiler import ProfilerActivity, profile

    from flexcache import CacheConfig, FlexCache, GenerationSignature
    from flexcache.codec import lossless
    from flexcache.core.blob import DeviceBlob
    from flexcache.kernels import seeded_noise as noise

    tiers = [{"kind": "hbm", "capacity_bytes": "2GiB"}] if cuda else [{"kind": "memory", "capacity_bytes": "2GiB"}]
    config = CacheConfig.from_dict({"embedder": {"device": dev}, "index": {"device": dev}, "store": {"tiers": tiers}})
    cache = FlexCache(config)
    shape = (16, 21, 60, 104)
    signature = GenerationSignature("gpu-check", "Euler", num_steps=10, height=480, width=832, num_frames=81,
                                    latent_shape=shape)
    prompt = "a red fox running through fresh snow at dawn"
    plan = cache.plan(prompt, signature, seed=7)
    latent = 0.8 * noise(shape, 7, dev) + 0.2 * torch.randn(shape, device=dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as inserting:
        keys = cache.insert(plan, {step: latent for step in plan.checkpoint_steps},
                            {step: 0.9 - 0.1 * step for step in plan.checkpoint_steps})
        if cuda:
            torch.cuda.synchronize()
    stored = cache.store.get(keys[-1], device=dev)
    hit = cache.plan(prompt, signature)
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=activities) as hitting:
        decoded = cache.fetch(hit, device=dev)
        if cuda:
            torch.cuda.synchronize()
    insert_copies, hit_copies = _memcpys(inserting), _memcpys(hitting)
    error = float((decoded - latent).pow(2).mean().sqrt())
    native = lossless.available("zstd", dev)  # on CUDA: nvCOMP is importable
    ok = decoded is not None and hit.hit and (not cuda or (hit_copies["DtoH"] == 0 and isinstance(stored, DeviceBlob)))
    rows = [
        f"| FlexCache insert of 5 checkpoints, 16x21x60x104, default codec, zstd native on {dev}: {native} | | | | "
        f"memcpys {insert_copies}; the stored blob is a {type(stored).__name__} on {getattr(stored, 'device', 'host')} |",
        f"| FlexCache HBM hit: fetch (K={hit.skip_steps}) decoded on {dev} | | | | memcpys {hit_copies} "
        f"(DtoH must be 0); rms error {error:.4f} |",
    ]
    cache.close()
    return rows, ok


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
    noise_diff = float((seeded_noise((16, 21, 60, 104), 7, dev).cpu() - seeded_noise((16, 21, 60, 104), 7)).abs().max())
    ok &= noise_diff <= 1e-6
    rows.append(f"| seeded noise, 16x21x60x104, device vs CPU | | | | max abs diff {noise_diff:.1e} |")
    rows += kernel_rows(dev, cuda)
    rows += nvcomp_rows(dev, cuda)
    rows += store_rows(cuda)
    try:
        hit_rows, hit_ok = hbm_hit_rows(dev, cuda)
    except Exception as exc:  # report and go on: one failing section must not cost the rest of the table
        hit_rows, hit_ok = [f"| FlexCache HBM hit | | | | FAILED: {type(exc).__name__}: {exc} |"], False
    rows += hit_rows
    ok &= hit_ok
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
