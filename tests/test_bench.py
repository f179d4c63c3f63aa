"""CPU checks of the benchmark's own code (python -m swa_ops.bench): FLOP counting, argument and
shape selection, the warm-up task list, and the problem setups, fp32 references and PyTorch peers of
the decode-feature and prefill rows on tiny shapes against swa_ops.reference (the GPU paths run the
same code on the real shapes)."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
import types

import pytest
import torch

from swa_ops import bench, reference

# Tiny versions of the feature rows: GQA 4, windows that cut in, a q_len > 1 row, sinks, soft-cap.
DECODE_TINY = [
    bench.Shape("tiny-softcap", 2, 8, 2, 64, 80, 32, soft_cap=5.0),
    bench.Shape("tiny-sinks", 3, 8, 2, 64, 70, 16, sinks=True),
    bench.Shape("tiny-spec4", 2, 8, 2, 64, 90, 32, q_len=4),
    bench.Shape("tiny-spec4-sinks", 2, 8, 4, 32, 50, 0, q_len=4, sinks=True),
    bench.Shape("tiny-fp8", 2, 8, 2, 64, 80, 32, fp8=True),
]
PREFILL_TINY = [
    bench.PrefillShape("tiny-prompt", 2, 8, 2, 32, 160, 160, 48),
    bench.PrefillShape("tiny-chunk", 2, 8, 2, 32, 300, 72, 64),  # chunk on a cached context
    bench.PrefillShape("tiny-sinks", 2, 8, 2, 32, 128, 128, 16, sinks=True),
    bench.PrefillShape("tiny-nowindow", 1, 4, 4, 32, 96, 40, 0),
]


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 2e-2) -> None:
    torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=2e-2)


@pytest.mark.parametrize("seq_len,q_len,window", [(8192, 8192, 4096), (32768, 2048, 4096),
                                                  (100, 7, 0), (50, 50, 128), (9, 9, 1),
                                                  (300, 72, 64)])
def test_visible_keys_matches_brute_force(seq_len, q_len, window):
    brute = sum(min(p + 1, window) if window > 0 else p + 1
                for p in range(seq_len - q_len, seq_len))
    assert bench.visible_keys(seq_len, q_len, window) == brute


def test_prefill_flops_of_the_design_table():
    """DESIGN.md's prefill TFLOP/s column: FlashInfer 6586 µs at 501 TFLOP/s on mistral-prefill."""
    s = next(s for s in bench.PREFILL_SHAPES if s.name == "mistral-prefill")
    assert bench.prefill_flops(s) == 4 * 128 * 32 * 8 * (4096 * 4097 // 2 + 4096 * 4096)
    assert abs(bench.prefill_flops(s) / 6586e-6 / 1e12 - 501) < 1


def test_shape_selection_and_peers():
    ap = bench.build_parser()
    dec, pre = bench.select_shapes(ap.parse_args([]))
    assert len(dec) == len(bench.SHAPES) and len(pre) == len(bench.PREFILL_SHAPES)
    dec, pre = bench.select_shapes(ap.parse_args(["--prefill"]))
    assert dec == [] and [s.name for s in pre] == [s.name for s in bench.PREFILL_SHAPES]
    dec, pre = bench.select_shapes(ap.parse_args(["--decode"]))
    assert pre == [] and len(dec) == len(bench.SHAPES)
    dec, pre = bench.select_shapes(ap.parse_args(["--shapes", "gptoss-sinks,chunked"]))
    assert [s.name for s in dec] == ["gptoss-sinks"] and [s.name for s in pre] == ["chunked"]
    _, pre = bench.select_shapes(ap.parse_args(["--prefill", "--prefill-batch", "4"]))
    assert {s.batch for s in pre} == {4}
    with pytest.raises(SystemExit):
        bench.select_shapes(ap.parse_args(["--shapes", "nosuchshape"]))
    assert bench.parse_peers("flashinfer,sdpa,flex") == ["flashinfer", "sdpa", "flex"]
    assert bench.parse_peers("none") == []
    with pytest.raises(SystemExit):
        bench.parse_peers("flashinfr")
    names = [s.name for s in bench.SHAPES] + [s.name for s in bench.PREFILL_SHAPES]
    assert len(set(names)) == len(names)


def test_warmup_tasks_one_per_variant():
    tasks = dict(bench.warmup_tasks(bench.SHAPES, bench.PREFILL_SHAPES,
                                    ["flashinfer", "sdpa", "flex"]))
    specs = list(tasks.values())
    assert len(specs) == len(set(specs))
    # The sink variant is shared by gptoss-sinks (decode alt) and gptoss-prefill.
    assert tasks["sink-d64-bfloat16-swa"] == "decode:gptoss-sinks:alt"
    assert tasks["prefill-d128-bfloat16-swa"] == "decode:mistral-spec4:fi"
    assert "decode-cuda-core-d256-bfloat16-swa-cap" in tasks
    assert {k for k in tasks if k.startswith("flex-")} == {
        f"flex-{s.name}" for s in bench.PREFILL_SHAPES}
    assert bench.warmup_tasks(bench.SHAPES, bench.PREFILL_SHAPES, ["sdpa"]) == []
    for spec in specs:  # every spec names a real row
        section, name, kind = spec.split(":")
        rows = bench.SHAPES if section == "decode" else bench.PREFILL_SHAPES
        assert any(s.name == name for s in rows) and kind in ("fi", "alt", "flex")


def _decode_reference(pb: bench.Problem, sinks: bool = True) -> torch.Tensor:
    s = pb.s
    return reference.paged_attention(
        pb.q, pb.k[0], pb.v[0], pb.block_tables, pb.seq_lens, pb.scale, s.window, s.soft_cap,
        pb.sinks if sinks else None, pb.query_start_loc, s.q_len, pb.k_scale, pb.v_scale)


@pytest.mark.parametrize("s", DECODE_TINY, ids=lambda s: s.name)
def test_decode_problem_reference_and_peers(s):
    pb = bench.Problem(s, 2, "cpu")
    spec = _decode_reference(pb)
    ref = pb.reference()
    assert ref.shape == (s.batch * s.q_len, s.heads, s.head_size)
    _close(ref, spec)
    if s.sinks:
        _close(pb.reference(sinks=False), _decode_reference(pb, sinks=False))
        # The sinks matter enough to be seen (a peer ignoring them must look wrong).
        assert bench.check(pb.reference(sinks=False), ref)[1]
    _close(pb.swa(0), ref)
    if pb.sdpa_mask is not None:
        _close(pb.sdpa(0), ref)
    else:
        assert s.fp8 or s.soft_cap > 0
    assert not bench.check(pb.swa(0), ref)[1]


def test_decode_visible_and_floor_bytes():
    s = next(s for s in bench.SHAPES if s.name == "mistral-spec4")
    assert s.visible == 4096 + 3
    assert s.window_bytes() == 2 * 32 * 4099 * 8 * 128 * 2
    m = next(s for s in bench.SHAPES if s.name == "mistral-32k")
    assert m.visible == 4096


@pytest.mark.parametrize("s", PREFILL_TINY, ids=lambda s: s.name)
def test_prefill_problem_sampled_reference(s):
    pp = bench.PrefillProblem(s, "cpu")
    full = reference.paged_attention(pp.q, pp.k, pp.v, pp.block_tables, pp.seq_lens, pp.scale,
                                     s.window, s.soft_cap, pp.sinks, pp.query_start_loc, s.q_len)
    idx, ref = pp.sample_reference()
    assert idx.numel() == len(set(idx.tolist()))
    _close(ref, full[idx])
    out = pp.swa(0)
    assert out.shape == (s.batch * s.q_len, s.heads, s.head_size)
    err, wrong = bench.check(out[idx], ref)
    assert not wrong, err
    if s.sinks:
        nosink = pp.sample_reference(sinks=False)[1]
        assert bench.check(nosink, ref)[1]
    # Sampled groups: first and last rows always; the window edge when it falls in the chunk.
    groups = pp.sample_groups()
    assert groups[0][0] == 0 and groups[-1][1] == s.q_len


@pytest.mark.parametrize("s", PREFILL_TINY, ids=lambda s: s.name)
def test_prefill_sdpa_and_flex_peers(s, monkeypatch):
    monkeypatch.setattr(bench.SdpaPrefill, "CHUNK", 32)  # several chunks and mask geometries
    pp = bench.PrefillProblem(s, "cpu")
    idx, ref = pp.sample_reference()
    sdpa = bench.SdpaPrefill(pp)
    assert not bench.check(sdpa(0)[idx], ref)[1]
    flex = bench.FlexPrefill(s, *bench.flex_inputs(pp), pp.sinks, pp.kv_start, compile=False)
    out = bench.FlexPrefill.to_tokens(flex(0))
    assert out.shape == (s.batch * s.q_len, s.heads, s.head_size)
    assert not bench.check(out[idx], ref)[1]


def test_flex_kv_start_matches_problem():
    for s in bench.PREFILL_SHAPES + PREFILL_TINY:
        s = dataclasses.replace(s, batch=1, seq_len=min(s.seq_len, 400),
                                q_len=min(s.q_len, 400, min(s.seq_len, 400)))
        pp = bench.PrefillProblem(s, "cpu")
        assert pp.kv_start == bench.flex_kv_start(s)
        assert pp.kv_start <= max(0, s.seq_len - s.q_len - s.window + 1) or s.window <= 0


def test_print_functions_handle_partial_rows(capsys):
    bench.print_row({"shape": "x", "swa_us": 1.0, "fi_full_us": 2.0, "fi_full_wrong": True,
                     "fi_trim_us": 3.0, "fi_trim_no_sinks": True}, header=True)
    bench.print_prefill_row({"shape": "y", "batch": 8, "heads": "32/8", "head_size": 128,
                             "seq_len": 8192, "q_len": 8192, "window": 4096, "flops": 3.3e12,
                             "swa_us": 6000.0, "swa_tflops": 550.0, "swa_err": 1e-3,
                             "fi_us": 6586.0, "fi_tflops": 501.0, "fi_wrong": True},
                            header=True)
    text = capsys.readouterr().out
    assert "2.0!" in text and "3.0*" in text and "(501)!" in text


def test_cpu_mode_main_runs(monkeypatch, capsys):
    monkeypatch.setattr(bench, "CPU_SHAPE", bench.Shape("mistral-cpu", 1, 8, 2, 64, 256, 64))
    bench.main(["--device", "cpu", "--reps", "1"])
    assert "speedup" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Dry runs of the GPU sections on the CPU: CUDA timers stubbed, and a fake `flashinfer` that
# computes what FlashInfer's wrappers document from the metadata the bench hands them (CSR pages,
# last-page lengths, qo_indptr with bottom-right causal rows, window_left = W - 1, soft-cap; sinks
# only through the sink wrapper, the plain wrappers drop them as fa2/fa3 do on SM90). This checks
# the bench's page metadata, trimmed lengths and q_len handling end to end; FlashInfer itself is
# only exercised on the GPU machine.


class _FakeWrapper:
    def __init__(self, float_workspace_buffer, kv_layout="NHD", use_tensor_cores=False,
                 **kwargs):
        assert kv_layout == "NHD" and float_workspace_buffer.dtype == torch.uint8
        self._backend = "fake"
        self.uses_sinks = False

    def _plan(self, qo_indptr, indptr, indices, last, num_qo_heads, num_kv_heads, head_dim,
              page_size, window_left, logits_soft_cap, sm_scale, q_data_type, kv_data_type,
              causal):
        for t in (qo_indptr, indptr, indices, last):
            assert t.dtype == torch.int32 and t.dim() == 1
        assert len(indptr) == len(last) + 1 == len(qo_indptr) and len(indices) == indptr[-1]
        assert ((last >= 1) & (last <= page_size)).all()
        pages = [indices[indptr[b]:indptr[b + 1]] for b in range(len(last))]
        width = max(len(p) for p in pages)
        self.block_tables = torch.full((len(last), width), -1, dtype=torch.int32)
        for b, p in enumerate(pages):
            self.block_tables[b, :len(p)] = p
        self.kv_lens = torch.tensor([(len(p) - 1) * page_size + int(last[b])
                                     for b, p in enumerate(pages)], dtype=torch.int32)
        q_lens = qo_indptr[1:] - qo_indptr[:-1]
        assert causal or bool((q_lens == 1).all())
        self.qo_indptr, self.max_q = qo_indptr.int(), int(q_lens.max())
        self.window = window_left + 1 if window_left >= 0 else 0
        self.cap = logits_soft_cap or 0.0
        self.scale = sm_scale
        self.heads = (num_qo_heads, num_kv_heads, head_dim)
        self.dtypes = (q_data_type, kv_data_type or q_data_type)

    def run(self, q, paged_kv_cache, *args, k_scale=None, v_scale=None, out=None, sinks=None):
        k, v = paged_kv_cache
        assert q.shape[0] == self.qo_indptr[-1] and tuple(q.shape[1:]) == (self.heads[0],
                                                                            self.heads[2])
        assert (q.dtype, k.dtype) == self.dtypes and k.shape[2] == self.heads[1]
        if self.uses_sinks:
            sinks, scale = args
            assert scale == self.scale and sinks.dtype == torch.float32
        else:
            sinks = None  # fa2/fa3 ignore a sinks argument
        ks = torch.tensor([k_scale]) if k_scale is not None else None
        vs = torch.tensor([v_scale]) if v_scale is not None else None
        o = reference.paged_attention(q, k, v, self.block_tables, self.kv_lens, self.scale,
                                      self.window, self.cap, sinks, self.qo_indptr, self.max_q,
                                      ks, vs)
        if out is None:
            return o
        assert out.shape == q.shape and out.dtype == q.dtype
        return out.copy_(o)


class _FakeDecode(_FakeWrapper):
    def plan(self, indptr, indices, last_page_len, num_qo_heads, num_kv_heads, head_dim,
             page_size, *, window_left=-1, logits_soft_cap=None, q_data_type=torch.float16,
             kv_data_type=None, sm_scale=None, q_len_per_req=1):
        qo = torch.arange(len(last_page_len) + 1, dtype=torch.int32) * q_len_per_req
        self._plan(qo, indptr, indices, last_page_len, num_qo_heads, num_kv_heads, head_dim,
                   page_size, window_left, logits_soft_cap, sm_scale, q_data_type, kv_data_type,
                   causal=q_len_per_req > 1)


class _FakePrefill(_FakeWrapper):
    def plan(self, qo_indptr, paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len,
             num_qo_heads, num_kv_heads, head_dim_qk, page_size, head_dim_vo=None, causal=False,
             sm_scale=None, window_left=-1, logits_soft_cap=None, q_data_type="float16",
             kv_data_type=None):
        self._plan(qo_indptr, paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len,
                   num_qo_heads, num_kv_heads, head_dim_qk, page_size, window_left,
                   logits_soft_cap, sm_scale, q_data_type, kv_data_type, causal)


class _FakeSink(_FakePrefill):
    def __init__(self, float_workspace_buffer, kv_layout="NHD", *, q_data_type, kv_data_type,
                 head_dim_qk, head_dim_vo, window_left):
        super().__init__(float_workspace_buffer, kv_layout)
        self.uses_sinks, self.jit_window_left = True, window_left

    def plan(self, *args, window_left=-1, **kwargs):
        assert window_left == self.jit_window_left
        super().plan(*args, window_left=window_left, **kwargs)


@pytest.fixture
def fake_gpu(monkeypatch):
    fi = types.ModuleType("flashinfer")
    fi.BatchDecodeWithPagedKVCacheWrapper = _FakeDecode
    fi.BatchPrefillWithPagedKVCacheWrapper = _FakePrefill
    fi.BatchAttentionWithAttentionSinkWrapper = _FakeSink
    monkeypatch.setitem(sys.modules, "flashinfer", fi)
    monkeypatch.setattr(bench, "FI_WORKSPACE_BYTES", 16)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda *a: types.SimpleNamespace(L2_cache_size=1 << 20))
    monkeypatch.setattr(bench, "copy_bandwidth", lambda: 1e12)
    monkeypatch.setattr(bench, "graph_time_us", lambda fn, layers, replays=20: (fn(0), 10.0)[1])
    monkeypatch.setattr(bench, "kernel_times", lambda fn, calls: (fn(0), {"decode": 9.0})[1])
    monkeypatch.setattr(bench, "event_time_us",
                        lambda fn, target_ms=0, reps=0, batches=None: (fn(1), 1e3)[1])
    monkeypatch.setattr(bench, "event_times_us",
                        lambda fns, target_ms=0, reps=0, batches=None:
                        {k: (f(1), 1e3)[1] for k, f in fns.items()})
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)  # CPU inductor: no lse


def _assert_sound(rows, keys):
    for row in rows:
        assert not [k for k in row if k.endswith("_wrong")], row
        assert not [k for k in row if k.endswith("_failed")], row
        for key in keys:
            assert key + "_us" in row and key + "_err" in row, (row["shape"], key)
    json.dumps(rows)


def test_decode_section_dry_run(fake_gpu, capsys):
    args = bench.build_parser().parse_args(["--calls", "1", "--breakdown"])
    rows = bench.run_decode(args, DECODE_TINY, ["flashinfer", "sdpa"], device="cpu")["rows"]
    _assert_sound(rows, ["swa", "fi_full", "fi_trim"])
    by = {r["shape"]: r for r in rows}
    assert by["tiny-sinks"]["fi_full_no_sinks"] and "fi_alt_us" in by["tiny-sinks"]
    assert "FI sink-wrapper" in by["tiny-sinks"]["fi_alt_kind"]
    assert "q_len_per_req=4" in by["tiny-spec4"]["fi_alt_kind"]
    assert "sdpa_us" in by["tiny-spec4"] and "sdpa_us" not in by["tiny-softcap"]
    assert all("speedup" in r for r in rows)
    out = capsys.readouterr().out
    assert "FI alt" in out and "notes:" in out


def test_prefill_section_dry_run(fake_gpu, capsys):
    args = bench.build_parser().parse_args(["--breakdown"])
    rows = bench.run_prefill(args, PREFILL_TINY, ["flashinfer", "sdpa", "flex"], device="cpu")
    _assert_sound(rows, ["swa", "fi", "sdpa", "flex"])
    by = {r["shape"]: r for r in rows}
    assert by["tiny-sinks"]["fi_kind"] == "sink-wrapper"
    assert by["tiny-chunk"]["fi_kind"] == "prefill-wrapper"
    assert all(r["speedup"] == 1.0 for r in rows)
    assert [r["swa_tflops"] for r in rows] == pytest.approx([r["flops"] / 1e9 for r in rows])
    assert "(max abs err)" in capsys.readouterr().out


def test_prefill_dry_run_marks_a_peer_without_sinks(fake_gpu, monkeypatch):
    """Where the sink wrapper cannot be built, FlashInfer runs without sinks, is checked against
    attention without them and is kept out of 'vs best'."""
    def no_sink_wrapper(*args, **kwargs):
        raise RuntimeError("no sink variant")
    monkeypatch.setattr(sys.modules["flashinfer"], "BatchAttentionWithAttentionSinkWrapper",
                        no_sink_wrapper)
    args = bench.build_parser().parse_args([])
    (row,) = bench.run_prefill(args, PREFILL_TINY[2:3], ["flashinfer"], device="cpu")
    assert row["fi_no_sinks"] and not row.get("fi_wrong") and "best_peer_us" not in row


def test_plot_covers_both_sections(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [{"shape": "a", "swa_us": 1.0, "fi_full_us": 2.0, "fi_full_wrong": True}]
    pre = [{"shape": "b", "swa_tflops": 300.0, "fi_tflops": 500.0, "fi_no_sinks": True}]
    bench.plot({"device": "x", "rows": rows, "prefill_rows": pre}, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 0


def test_warm_up_reports_failed_and_timed_out_children():
    # A child that fails on every machine (no such row: it was "decode:gptoss:fi", which only
    # fails without a GPU or FlashInfer, and passed on the GPU machine with the peers, run 41).
    tasks = [("broken", "decode:no-such-shape:fi"), ("too-slow", "decode:gptoss:alt")]
    status = bench.warm_up(tasks[:1], 0, timeout_s=300)["tasks"]
    assert status["broken"]["rc"] not in (0, "timeout")
    status = bench.warm_up(tasks[1:], 0, timeout_s=0)["tasks"]
    assert status["too-slow"]["rc"] == "timeout"


def test_json_keeps_finished_rows_when_a_run_is_cut_short(fake_gpu, monkeypatch, tmp_path):
    """A device call's time limit can kill the bench mid-section: every finished row must already
    be in the JSON (marked partial), and a completed run drops the mark."""
    path = tmp_path / "r.json"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "fake", raising=False)
    monkeypatch.setattr(bench, "select_shapes", lambda args: (DECODE_TINY[:2], PREFILL_TINY[:2]))
    real_decode, real_prefill = bench.run_decode, bench.run_prefill
    monkeypatch.setattr(bench, "run_decode",
                        lambda a, s, p, on_row=None: real_decode(a, s, p, "cpu", on_row))

    def prefill_killed_after_one_row(a, s, p, on_row=None):
        real_prefill(a, s[:1], p, "cpu", on_row)
        raise KeyboardInterrupt  # what the time limit does

    monkeypatch.setattr(bench, "run_prefill", prefill_killed_after_one_row)
    args = bench.build_parser().parse_args(["--json", str(path), "--peers", "sdpa",
                                            "--no-warmup", "--calls", "1"])
    with pytest.raises(KeyboardInterrupt):
        bench.run_gpu(args)
    saved = json.loads(path.read_text())
    assert saved["partial"] is True and saved["device"] == "fake"
    assert [r["shape"] for r in saved["rows"]] == [s.name for s in DECODE_TINY[:2]]
    assert [r["shape"] for r in saved["prefill_rows"]] == [PREFILL_TINY[0].name]
    assert "copy_bandwidth_Bps" in saved

    monkeypatch.setattr(bench, "run_prefill",
                        lambda a, s, p, on_row=None: real_prefill(a, s, p, "cpu", on_row))
    monkeypatch.setattr(sys, "argv", ["bench"])
    bench.main(["--json", str(path), "--peers", "sdpa", "--no-warmup", "--calls", "1",
                "--device", "cuda"])
    saved = json.loads(path.read_text())
    assert "partial" not in saved and len(saved["prefill_rows"]) == 2


def test_warm_up_then_rows_in_a_fresh_process(fake_gpu, monkeypatch, tmp_path):
    """With a warm-up, the process that runs it never makes a CUDA context, and the rows are
    timed by the same command in a new process (--no-warmup plus the warm-up's record), whose
    exit status is the bench's; that process puts the record in its JSON. --warmup-only stops
    after the warm-up and writes only it."""
    def no_cuda(*a, **k):
        raise AssertionError("the warm-up process touched CUDA")

    monkeypatch.setattr(torch.cuda, "get_device_name", no_cuda, raising=False)
    monkeypatch.setattr(bench, "run_gpu", no_cuda)
    record = {"seconds": 1.0, "tasks": {"decode-x": {"rc": 0}}, "max_jobs": "2"}
    seen = []
    monkeypatch.setattr(bench, "warm_up",
                        lambda tasks, batch, timeout: (seen.append(tasks), record)[1])

    def child(cmd):
        seen.append(cmd)
        with open(cmd[cmd.index("--warmup-record") + 1]) as f:
            seen.append(json.load(f))
        return 3

    monkeypatch.setattr(bench.subprocess, "call", child)
    argv = ["--decode", "--shapes", "seed", "--json", str(tmp_path / "r.json"), "--device", "cuda"]
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 3
    cmd = seen[1]
    assert cmd[:3] == [sys.executable, "-m", "swa_ops.bench"] and cmd[3:3 + len(argv)] == argv
    assert "--no-warmup" in cmd and seen[2] == record
    assert not (tmp_path / "r.json").exists()  # the timing process writes it

    with pytest.raises(SystemExit):  # the parser's error
        bench.main(argv + ["--warmup-only", "--no-warmup"])
    seen.clear()
    bench.main(argv + ["--warmup-only"])
    assert len(seen) == 1 and json.loads((tmp_path / "r.json").read_text()) == {"warmup": record}

    # The timing process: the record lands in its result.
    monkeypatch.undo()
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "fake", raising=False)
    monkeypatch.setattr(bench, "select_shapes", lambda args: ([], []))
    path = tmp_path / "w.json"
    path.write_text(json.dumps(record))
    args = bench.build_parser().parse_args(["--peers", "none", "--no-warmup",
                                            "--warmup-record", str(path)])
    assert bench.run_gpu(args)["warmup"] == record


def test_event_times_alternate(monkeypatch):
    """Several contenders' batches, each sized to the target from its own first call: one
    unmeasured (warm) batch each, then `reps` measured batches alternating (A B, B A, ...);
    each contender's median is its own, and every measured batch is handed back."""
    clock = [0.0]  # ms
    log = []  # the contender of every call, in order

    class FakeEvent:
        def __init__(self, enable_timing=False):
            self.t = 0.0

        def record(self):
            self.t = clock[0]

        def synchronize(self):
            pass

        def elapsed_time(self, other):  # ms
            return other.t - self.t

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)

    def contender(key, ms, slow_calls=range(0)):
        def fn(i):
            log.append(key)
            clock[0] += 10 * ms if log.count(key) in slow_calls else ms
        return fn

    # a: 100 ms per call (3-call batches), 10x slower in its warm batch (its calls 3-5);
    # b: 30 ms (10-call batches).
    batches = {}
    times = bench.event_times_us({"a": contender("a", 100.0, range(3, 6)),
                                  "b": contender("b", 30.0)},
                                 target_ms=300.0, reps=3, batches=batches)
    assert times == pytest.approx({"a": 100e3, "b": 30e3}), "the warm batch is not measured"
    assert batches == {"a": pytest.approx([100e3] * 3), "b": pytest.approx([30e3] * 3)}
    # Warm-up and sizing calls (a a b b), the warm batches (b x 10, a x 3: rep -1 takes the
    # reversed order), then a b, b a, a b.
    runs = log[4:]
    starts = [0, 10, 13, 16, 26, 36, 39, 42]
    assert [runs[k] for k in starts] == ["b", "a", "a", "b", "b", "a", "a", "b"]
    assert len(runs) == 4 * 3 + 4 * 10 and log[:4] == ["a", "a", "b", "b"]
    one = []
    assert bench.event_time_us(contender("c", 50.0), target_ms=300.0, batches=one) == \
        pytest.approx(50e3)
    assert one == pytest.approx([50e3] * 5)  # the default: five measured batches


def test_hold_stream_without_torch_sleep_warns_once(monkeypatch, capsys):
    """A torch without the private spin leaves the stream unheld and says so, once."""
    monkeypatch.delattr(torch.cuda, "_sleep", raising=False)
    monkeypatch.setattr(bench.hold_stream, "warned", False, raising=False)
    bench.hold_stream()
    bench.hold_stream()
    assert capsys.readouterr().out.count("host's submission latency") == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_graph_time_leaves_out_the_hosts_submission(monkeypatch):
    """graph_time_us times device work only: a host that takes 1 ms to submit each timed batch's
    first replay (unheld, that is 1000 / 160 µs more per call of a graph of 8 calls x 20 replays)
    leaves the per-call time as it was, because the stream is held while the host enqueues."""
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    bench.hold_stream(1000.0)
    b.record()
    b.synchronize()
    assert a.elapsed_time(b) >= 0.5, "the spin must hold the stream"

    x = torch.zeros(1 << 16, device="cuda")
    fn = lambda i: x.add_(1.0)  # noqa: E731  (a few µs per call)
    plain = bench.graph_time_us(fn, 1)
    calls = [0]
    real = torch.cuda.CUDAGraph

    class SlowFirstReplay(real):
        def replay(self):
            calls[0] += 1
            if calls[0] > 1 and (calls[0] - 2) % 20 == 0:  # each timed batch's first replay
                time.sleep(1e-3)
            super().replay()

    monkeypatch.setattr(torch.cuda, "CUDAGraph", SlowFirstReplay)
    slowed = bench.graph_time_us(fn, 1)
    assert calls[0] == 1 + 5 * 20
    assert slowed < plain + 1.5, (plain, slowed)  # unheld: about plain + 6.25
