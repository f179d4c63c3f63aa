"""The README's example runs as written and agrees with the reference."""
import pathlib
import re

import torch

import swa_ops

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs_and_matches_reference():
    code = re.search(r"## Example\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    out = scope["out"]
    expected = swa_ops.reference.paged_attention(
        scope["q"], scope["k_cache"], scope["v_cache"], scope["block_tables"], scope["seq_lens"],
        scope["head_size"] ** -0.5, sliding_window=128)
    assert out.shape == (2, 32, 128)
    torch.testing.assert_close(out.float(), expected.float(), atol=2e-2, rtol=2e-2)
