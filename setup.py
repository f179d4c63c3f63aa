"""Decides what to compile and with which flags; metadata lives in pyproject.toml.

CUDA is built when the installed torch is a CUDA build *and* a CUDA toolkit is found (never gated on
torch.cuda.is_available(): build machines often have no GPU). Otherwise the CPU extension alone.
Environment:
  SWA_OPS_FORCE_CPU=1      build the CPU extension only, even with a toolkit present.
  TORCH_CUDA_ARCH_LIST     CUDA architectures (default 9.0a).
  SWA_OPS_HEAD_SIZES       comma list narrowing the CUDA head-size instantiations while iterating
                           (default: every supported size).
  PYTORCH_ROCM_ARCH        AMD targets on a ROCm torch (default gfx942;gfx90a).
"""
import glob
import os

from setuptools import setup
import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _want_gpu():
    if os.environ.get("SWA_OPS_FORCE_CPU", "0") == "1":
        return False
    if torch.version.hip is not None:
        return cpp_extension.ROCM_HOME is not None
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def _extension():
    include_dirs = [os.path.join(ROOT, "csrc"), os.path.join(ROOT, "csrc", "include")]
    cxx = ["-O3", "-std=c++17", "-fopenmp" if os.name != "nt" else "/openmp"]
    sources = ["csrc/torch_bindings.cpp", "csrc/checks.cpp"] + _rel("csrc/cpu/*.cpp")
    if not _want_gpu():
        return cpp_extension.CppExtension(
            "swa_ops._C", sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])

    sources += _rel("csrc/cuda/*.cu")
    defines = []
    head_sizes = os.environ.get("SWA_OPS_HEAD_SIZES")
    if head_sizes:
        defines.append(f"-DSWA_OPS_HEAD_SIZES={head_sizes.replace(',', '_')}")
        defines += [f"-DSWA_OPS_HEAD_{int(h)}" for h in head_sizes.split(",")]
    cxx += defines + ["-DSWA_OPS_WITH_GPU"]
    if torch.version.hip is not None:
        os.environ.setdefault("PYTORCH_ROCM_ARCH", "gfx942;gfx90a")
        gpu = ["-O3", "-std=c++17", "-DUSE_ROCM"] + defines
    else:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0a")
        # The Hopper prefill variant (wgmma) needs sm_90a code; the host dispatches to it only
        # when the build has it.
        if "9.0a" in os.environ["TORCH_CUDA_ARCH_LIST"].replace(" ", ";").split(";"):
            defines.append("-DSWA_OPS_SM90A")
            cxx.append("-DSWA_OPS_SM90A")
        gpu = ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo", "--expt-relaxed-constexpr",
               "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
               "-U__CUDA_NO_BFLOAT16_CONVERSIONS__", "-U__CUDA_NO_BFLOAT16_OPERATORS__"] + defines
    return cpp_extension.CUDAExtension(
        "swa_ops._C", sources, include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx, "nvcc": gpu}, extra_link_args=["-fopenmp"])


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
