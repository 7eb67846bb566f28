import subprocess
import sys


def test_import_touches_no_cuda_and_no_heavy_backends():
    code = (
        "import sys, torch, flexcache\n"
        "from flexcache import CacheConfig, FlexCacheError\n"
        "assert not torch.cuda.is_initialized(), 'CUDA initialised'\n"
        "heavy = [m for m in ('triton', 'faiss', 'diffusers', 'nvidia.nvcomp', 'cupy', 'sentence_transformers')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_public_names_resolve():
    import flexcache

    for name in flexcache.__all__:
        assert getattr(flexcache, name) is not None, name
