"""Where a decode call's time goes, CTA by CTA (diagnostics build only: -DSWA_OPS_TIMELINE).

Build: NVCC_APPEND_FLAGS=-DSWA_OPS_TIMELINE python3 setup.py build_ext --inplace (timeline.h).
Each bench row's problem is captured as the bench captures it (a CUDA graph of `chain` calls over
the layers), every call given its own record buffer (SWA_OPS_TIMELINE_PTR is read per call, at
capture). After a few replays the buffers hold the last replay's records: per CTA its start, the
return of griddepcontrol.wait, the end of its K/V loop and its end (globaltimer, ns), and its SM.
Per call (the chain's second to last) it prints, in µs from the previous call's last end:
  first start / last start of the decode CTAs, first and last wait return, the ends' quantiles,
  the merge's, the call's length, and `lost`: the integral over the call of the slots' idle
  fraction (1 - active decode CTAs / min(CTAs, slots)), i.e. how much of the call ran below full
  occupancy (ramp and tail).
Usage: python3 notes/timeline.py --shapes seed,mistral-32k [--configs "a:;b:SWA_OPS_X=1"]
       [--json FILE]
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import row_probe  # noqa: E402  (adds the probe's shapes to bench.SHAPES)
from env_ab import bench_problems, env_applied, parse_configs  # noqa: E402

bench = row_probe.bench
WORDS = 9  # timeline.h's kTimelineWords, kTimelineMergeBase and kTimelineMergeCtas
MERGE_BASE = 1 << 16
SLOT_WORDS = (MERGE_BASE + (1 << 13)) * WORDS


def capture(pb, layers, bufs):
    chain = len(bufs)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(3):
            pb.swa(i)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(chain):
            os.environ["SWA_OPS_TIMELINE_PTR"] = str(bufs[i].data_ptr())
            pb.swa(i % layers)
    os.environ.pop("SWA_OPS_TIMELINE_PTR", None)
    return graph


def records(buf):
    r = buf.view(-1, WORDS).cpu()
    kind = r[:, 4] >> 32
    r = torch.cat([r[:, :4], (r[:, 4] & 0xffffffff)[:, None], r[:, 5:]], dim=1)
    idx = torch.arange(len(r))
    dec, mer = r[(idx < MERGE_BASE) & (kind == 1)], r[(idx >= MERGE_BASE) & (kind == 2)]
    return dec, mer


def q(t, f):
    s = sorted(t)
    return s[min(len(s) - 1, int(f * (len(s) - 1) + 0.5))]


def lost_us(dec, t0, t1, slots):
    """Integral over [t0, t1] of 1 - active / min(n, slots), in µs: occupancy lost to ramp and tail."""
    n = len(dec)
    full = min(n, slots)
    ev = [(int(x[1]), 1) for x in dec] + [(int(x[3]), -1) for x in dec]  # active from wait to end
    ev.sort()
    active, last, lost = 0, t0, 0.0
    for t, d in ev:
        t = min(max(t, t0), t1)
        lost += (t - last) * (1 - min(active, full) / full)
        active += d
        last = t
    lost += (t1 - last) * (1 - min(active, full) / full)
    return lost / 1e3


def analyse(calls, slots):
    """calls: [(dec, mer)] in order. Returns the per-call summaries (from the second call on)."""
    out = []
    prev_end = None
    for dec, mer in calls:
        end = int(max(dec[:, 3].max(), mer[:, 3].max() if len(mer) else 0))
        if prev_end is not None:
            z = prev_end
            us = lambda t: (int(t) - z) / 1e3  # noqa: E731
            starts, waits, loops, ends = (dec[:, i].tolist() for i in range(4))
            s = {
                "ctas": len(dec), "merge_ctas": len(mer),
                "start_first": us(min(starts)), "start_last": us(max(starts)),
                "wait_first": us(min(waits)), "wait_last": us(max(waits)),
                "loop_us_median": (q([b - a for a, b in zip(waits, loops)], 0.5)) / 1e3,
                "combine_us_median": q([b - a for a, b in zip(loops, ends)], 0.5) / 1e3,
                # warp 0's loop end to every warp's (the CTA's slowest warp), and that to the end
                "warps_us_median": q([int(x[7]) - int(x[2]) for x in dec], 0.5) / 1e3,
                "warps_us_p90": q([int(x[7]) - int(x[2]) for x in dec], 0.9) / 1e3,
                "after_sync_us_median": q([int(x[3]) - int(x[7]) for x in dec], 0.5) / 1e3,
                # the combine's steps: the warps' partials stored, then the element loop
                "store_us_median": q([int(x[8]) - int(x[7]) for x in dec], 0.5) / 1e3,
                "elems_us_median": q([int(x[3]) - int(x[8]) for x in dec], 0.5) / 1e3,
                "end_first": us(min(ends)), "end_p10": us(q(ends, 0.1)),
                "end_p50": us(q(ends, 0.5)), "end_p90": us(q(ends, 0.9)), "end_last": us(max(ends)),
                "call": us(end),
                "lost": lost_us(dec, z, int(dec[:, 3].max()), slots),
            }
            if len(mer):
                mw, me = mer[:, 1].tolist(), mer[:, 3].tolist()
                s.update(merge_start_first=us(mer[:, 0].min()), merge_wait_last=us(max(mw)),
                         merge_end_first=us(min(me)), merge_end_last=us(max(me)))
            # CTAs per SM and whether lone CTAs end earlier
            per_sm = {}
            for x in dec:
                per_sm.setdefault(int(x[4]), []).append(int(x[3]))
            s["sms"] = len(per_sm)
            s["ctas_per_sm"] = {k: sum(1 for v in per_sm.values() if len(v) == k)
                                for k in sorted({len(v) for v in per_sm.values()})}
            out.append(s)
        prev_end = end
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", required=True)
    ap.add_argument("--configs", default="def:")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    result = []
    bw = 0.0
    for s, layers, pb, floor, bw in bench_problems(args.shapes.split(",")):
        name = s.name
        chain = max(layers, 8)
        for cname, env in parse_configs(args.configs):
            with env_applied(env):
                bufs = [torch.zeros(SLOT_WORDS, dtype=torch.int64, device="cuda")
                        for _ in range(chain)]
                graph = capture(pb, layers, bufs)
                for _ in range(5):
                    graph.replay()
                torch.cuda.synchronize()
                calls = [records(b) for b in bufs]
                # 2 CTAs per SM is the decode rings' occupancy at every bench row but D = 64's
                slots = 2 * sms
                summ = analyse(calls, slots)
                mid = summ[len(summ) // 2]
                keys = ["start_first", "start_last", "wait_first", "wait_last", "end_first",
                        "end_p10", "end_p50", "end_p90", "end_last"]
                line = " ".join(f"{k}={mid[k]:.1f}" for k in keys)
                if "merge_end_last" in mid:
                    line += (f" merge: start {mid['merge_start_first']:.1f} wait_last "
                             f"{mid['merge_wait_last']:.1f} end {mid['merge_end_first']:.1f}-"
                             f"{mid['merge_end_last']:.1f}")
                calls_us = [c["call"] for c in summ]
                print(f"{name} [{cname}] floor {floor:.1f} ctas {mid['ctas']} "
                      f"sms {mid['sms']} {mid['ctas_per_sm']} loop {mid['loop_us_median']:.1f} "
                      f"combine {mid['combine_us_median']:.2f} (warps {mid['warps_us_median']:.2f}"
                      f" p90 {mid['warps_us_p90']:.2f}, then {mid['after_sync_us_median']:.2f}: store "
                      f"{mid['store_us_median']:.2f} elems "
                      f"{mid['elems_us_median']:.2f}) "
                      f"lost {mid['lost']:.1f}\n  "
                      f"calls {' '.join(f'{c:.1f}' for c in calls_us)}\n  {line}", flush=True)
                # The per-CTA raw records of the middle call, for plots
                k = 1 + len(summ) // 2
                dec, mer = calls[k]
                z = int(max(calls[k - 1][0][:, 3].max(),
                            calls[k - 1][1][:, 3].max() if len(calls[k - 1][1]) else 0))
                raw = {"decode": [[(int(x[i]) - z) / 1e3 for i in range(4)] + [int(x[4]), int(x[5]),
                                  int(x[6]), (int(x[7]) - z) / 1e3] for x in dec],
                       "merge": [[(int(x[i]) - z) / 1e3 for i in range(4)] + [int(x[4])]
                                 for x in mer]}
                result.append({"shape": name, "config": cname, "floor_us": floor,
                               "calls": summ, "raw_middle_call": raw})
                del graph, bufs
        del pb  # (before bench_problems builds the next row's)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "copy_bandwidth_Bps": bw,
                       "rows": result}, f)


if __name__ == "__main__":
    main()
