"""swa_ops: sliding-window attention over a paged KV cache, as PyTorch custom ops."""
import torch  # noqa: F401  (loads libtorch before our extension)

try:
    from . import _C  # noqa: F401  (registers torch.ops.swa_ops.*)
except ImportError as e:  # pragma: no cover - only when the extension was not built
    raise ImportError(
        "swa_ops' compiled extension is missing; install the package with "
        "`pip install --no-build-isolation -e .` (see README.md)") from e

from . import ops, reference  # noqa: E402
from .ops import paged_attention, reshape_and_cache  # noqa: E402
from .attention import PagedSWAAttention  # noqa: E402

__all__ = ["ops", "reference", "paged_attention", "reshape_and_cache", "PagedSWAAttention"]
__version__ = "0.1.0"
