"""Environment shared by the side-by-side benchmark scripts."""


def openblas_env():
    """OPENBLAS_CORETYPE for this CPU: OpenBLAS 0.3.21 mis-detects the
    AVX-512 hosts we bench on, so force SkylakeX there; elsewhere (an AVX2
    host such as Zen 3) forcing it dies on an illegal instruction, so let
    OpenBLAS detect."""
    with open("/proc/cpuinfo") as f:
        return {"OPENBLAS_CORETYPE": "SkylakeX"} if " avx512f" in f.read() else {}
