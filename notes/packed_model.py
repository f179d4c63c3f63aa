"""A Python model of the packed multi-token decode kernel and its merge, checked against
swa_ops.reference on random cases (no GPU needed; fp64, so only the index math is under test).

It mirrors decode_mma.h (PACKED), merge.h (PACKED), split.h and launch.h step by step: the host
split (span bound W + max_query_len - 1), chunks of 16 packed (token, head) rows, each chunk's
union span and partitions, tiles dealt to NW warps in the kernel's order, which keys are loaded
(asserting no -1 table entry is read), the unmasked-tile test and the per-row mask (rows past the
chunk's live rows see every loaded key), the -inf-safe online softmax, the warp combine, sinks,
sentinels, the merge's per-row partition range and the zeroing of uncovered tokens. It does not
model the MMA fragment layouts, which the packed mode shares with single-token decode.

    python notes/packed_model.py SEED NUM_CASES
"""
import math, random, itertools, sys
import torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from swa_ops import reference

NEG = float("-inf")
TILE, ROWS, PALIGN = 16, 16, 64

def cdiv(a, b): return -(-a // b)

def seq_span(L, W):
    lo = (L - W if L > W else 0) if W > 0 else 0
    return dict(lo=lo, hi=L, origin=lo & ~15)

def max_span_tokens(W, maxctx):
    if W <= 0: return maxctx
    return min(W + 15, maxctx)

def choose_split(num_seqs, kvh, chunks, W, maxctx, slots):
    span = max_span_tokens(W, maxctx)
    pairs = num_seqs * kvh * chunks
    parts = 1
    if span > 0 and pairs > 0:
        parts = slots // pairs
        parts = min(parts, cdiv(span, PALIGN)); parts = max(parts, 1)
    p = cdiv(span, parts) if span > 0 else PALIGN
    p = cdiv(p, PALIGN) * PALIGN
    return (cdiv(span, p) if span > 0 else 1), p

def packed_seq(qsl, lens, seq, num_tokens, cap):
    b = qsl[seq]; e = min(qsl[seq + 1], num_tokens)
    q_len = e - b if (b >= 0 and e > b) else 0
    L = min(max(lens[seq], 0), cap)
    return dict(q_begin=b, q_len=q_len, len0=L - q_len + 1)

def tok_len(ps, i): return max(ps["len0"] + i, 0)

def packed_span(ps, row0, rows, group, W):
    sp = seq_span(tok_len(ps, row0 // group), W)
    sp["hi"] = tok_len(ps, (row0 + rows - 1) // group)
    return sp

def run(query, kc, vc, bt, lens, scale, W, sinks, qsl, mql, NW, slots):
    T, H, D = query.shape
    nb, bs, KVH, _ = kc.shape
    group = H // KVH
    S = bt.shape[0]
    cap = bt.shape[1] * bs
    chunks = cdiv(mql * group, 16)
    W2 = W + mql - 1 if W > 0 else W
    num_parts, P = choose_split(S, KVH, chunks, W2, cap, slots)
    out = torch.full((T, H, D), float("nan"), dtype=torch.float64)
    part_out = torch.full((T, H, num_parts, D), float("nan"), dtype=torch.float64)
    part_max = torch.full((T, H, num_parts), float("nan"), dtype=torch.float64)
    part_sum = torch.full((T, H, num_parts), float("nan"), dtype=torch.float64)
    read_blocks = set()
    # uncovered tokens
    first = min(max(qsl[0], 0), T); last = max(min(qsl[S], T), first)
    out[:first] = 0; out[last:] = 0
    sl2 = scale * math.log2(math.e)
    for seq, kvh, chunk, part in itertools.product(range(S), range(KVH), range(chunks), range(num_parts)):
        ps = packed_seq(qsl, lens, seq, T, cap)
        gc = min(16, ps["q_len"] * group - chunk * 16)
        if gc <= 0: continue
        span = packed_span(ps, chunk * 16, gc, group, W)
        begin = span["origin"] + part * P
        end = min(begin + P, span["hi"])
        tok = lambda r: ps["q_begin"] + (chunk * 16 + r) // group
        head = lambda r: kvh * group + (chunk * 16 + r) % group
        if begin >= end:
            for r in range(gc):
                if num_parts == 1: out[tok(r), head(r)] = 0
                else:
                    part_max[tok(r), head(r), part] = NEG; part_sum[tok(r), head(r), part] = 0
            continue
        # Q (dead rows zero)
        Q = torch.zeros(16, D, dtype=torch.float64)
        for r in range(gc): Q[r] = query[tok(r), head(r)].double()
        rlo = [-2**31] * 16; rhi = [2**31] * 16
        for r in range(gc):
            n = tok_len(ps, (chunk * 16 + r) // group)
            rlo[r] = seq_span(n, W)["lo"]; rhi[r] = n
        all_lo = seq_span(span["hi"], W)["lo"]; all_hi = tok_len(ps, chunk * 16 // group)
        n_tiles = cdiv(end - begin, TILE)
        m = [[NEG] * 16 for _ in range(NW)]; l = [[0.0] * 16 for _ in range(NW)]
        o = [torch.zeros(16, D, dtype=torch.float64) for _ in range(NW)]
        for tile in range(n_tiles):
            w = tile % NW
            tb = begin + tile * TILE
            K = torch.zeros(16, D, dtype=torch.float64); V = torch.zeros(16, D, dtype=torch.float64)
            for j in range(16):
                t = tb + j
                if span["lo"] <= t < end:
                    b = int(bt[seq, t // bs]); read_blocks.add((seq, t // bs))
                    assert b >= 0, "read a -1 entry"
                    K[j] = kc[b, t % bs, kvh].double(); V[j] = vc[b, t % bs, kvh].double()
            s = (Q @ K.T) * sl2
            if tb < all_lo or tb + 16 > all_hi:
                for r in range(16):
                    for j in range(16):
                        t = tb + j
                        if t < rlo[r] or t >= rhi[r]: s[r, j] = NEG
            for r in range(16):
                mx = s[r].max().item(); m0 = m[w][r]
                mn = max(m0, mx)
                al = 1.0 if m0 == mn else 2.0 ** (m0 - mn)
                sub = 0.0 if mn == NEG else mn
                pr = torch.exp2(s[r] - sub)
                l[w][r] = l[w][r] * al + pr.sum().item()
                o[w][r] = o[w][r] * al + pr @ V
                m[w][r] = mn
        for r in range(gc):
            mx = max(m[w][r] for w in range(NW))
            acc = torch.zeros(D, dtype=torch.float64); sm = 0.0
            for w in range(NW):
                if m[w][r] == NEG: continue
                f = 2.0 ** (m[w][r] - mx); acc += f * o[w][r]; sm += f * l[w][r]
            if num_parts == 1:
                if sinks is not None:
                    sk = float(sinks[head(r)]) * math.log2(math.e)
                    mx2 = max(mx, sk); f = 2.0 ** (mx - mx2) if mx != NEG else 0.0
                    acc = acc * f; sm = sm * f + 2.0 ** (sk - mx2)
                out[tok(r), head(r)] = acc / sm if sm > 0 else 0.0
            else:
                part_out[tok(r), head(r), part] = acc / sm if sm > 0 else 0.0
                part_max[tok(r), head(r), part] = mx; part_sum[tok(r), head(r), part] = sm
    if num_parts > 1:
        for seq, i, h in itertools.product(range(S), range(mql), range(H)):
            ps = packed_seq(qsl, lens, seq, T, cap)
            if i >= ps["q_len"]: continue
            t = ps["q_begin"] + i
            rr = i * group + h % group; row0 = rr - rr % 16
            rows = min(16, ps["q_len"] * group - row0)
            ch = packed_span(ps, row0, rows, group, W)
            own = seq_span(tok_len(ps, i), W)
            j0 = j1 = 0
            if own["hi"] > own["lo"]:
                j0 = (own["lo"] - ch["origin"]) // P
                j1 = min((own["hi"] - 1 - ch["origin"]) // P + 1, num_parts)
            mx = float(sinks[h]) * math.log2(math.e) if sinks is not None else NEG
            for j in range(j0, j1):
                assert not math.isnan(part_max[t, h, j].item()), ("unwritten partition", seq, i, h, j)
                if part_sum[t, h, j] > 0: mx = max(mx, part_max[t, h, j].item())
            acc = torch.zeros(D, dtype=torch.float64); den = 0.0
            if mx != NEG:
                for j in range(j0, j1):
                    lj = part_sum[t, h, j].item()
                    if not lj > 0: continue
                    wgt = 2.0 ** (part_max[t, h, j].item() - mx) * lj
                    acc += wgt * part_out[t, h, j]; den += wgt
                if sinks is not None: den += 2.0 ** (float(sinks[h]) * math.log2(math.e) - mx)
            out[t, h] = acc / den if den > 0 else 0.0
    return out, num_parts, read_blocks

def make(rng, S_max=4):
    group = rng.choice([1, 2, 3, 4, 5, 8, 16])
    KVH = rng.choice([1, 2])
    H = group * KVH
    mql = rng.randint(1, max(1, 64 // group))
    D = 16; bs = rng.choice([1, 2, 4, 8, 16, 32])
    W = rng.choice([0, 1, 2, 3, 7, 16, 20, 33, 64, 100])
    S = rng.randint(1, S_max)
    q_lens = [rng.choice([0, 1, rng.randint(1, mql), mql]) for _ in range(S)]
    lens = [rng.choice([0, q, q + rng.randint(0, 40), q + rng.randint(0, 300)]) if q else rng.randint(0, 50) for q in q_lens]
    if rng.random() < 0.1 and any(q_lens):  # negative positions
        k = rng.randrange(S); lens[k] = max(0, q_lens[k] - rng.randint(1, 3))
    used = [cdiv(L, bs) for L in lens]
    maxb = max(used + [1]) + rng.randint(0, 2)
    nb = sum(used) + 1
    perm = list(range(nb)); rng.shuffle(perm)
    bt = torch.full((S, maxb), -1, dtype=torch.int32)
    for s in range(S):
        if lens[s] == 0 or q_lens[s] == 0:
            for b in range(used[s]): perm.pop()
            continue
        first = reference.window_start(lens[s] - q_lens[s], W) // bs if lens[s] >= q_lens[s] else 0
        for b in range(used[s]):
            x = perm.pop()
            if b >= first: bt[s, b] = x
    g = torch.Generator().manual_seed(rng.randint(0, 1 << 30))
    kc = torch.randn(nb, bs, KVH, D, generator=g, dtype=torch.float64)
    vc = torch.randn(nb, bs, KVH, D, generator=g, dtype=torch.float64)
    lead = 0; trail = rng.choice([0, 0, 3])
    T = lead + sum(q_lens) + trail
    qsl = [lead] + [lead + x for x in itertools.accumulate(q_lens)]
    query = torch.randn(T, H, D, generator=g, dtype=torch.float64)
    sinks = torch.randn(H, generator=g, dtype=torch.float64) * 3 if rng.random() < 0.3 else None
    NW = rng.choice([2, 4]); slots = rng.choice([1, 8, 64, 264])
    return dict(query=query, kc=kc, vc=vc, bt=bt, lens=lens, W=W, sinks=sinks, qsl=qsl, mql=mql, NW=NW, slots=slots)

rng = random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
n_cases = int(sys.argv[2]) if len(sys.argv) > 2 else 200
worst = 0; splits = 0
for c in range(n_cases):
    a = make(rng)
    out, nparts, _ = run(a["query"], a["kc"], a["vc"], a["bt"], a["lens"], 0.25, a["W"], a["sinks"], a["qsl"], a["mql"], a["NW"], a["slots"])
    ref = reference.paged_attention(a["query"], a["kc"], a["vc"], a["bt"], torch.tensor(a["lens"], dtype=torch.int32), 0.25, a["W"], 0.0, a["sinks"], torch.tensor(a["qsl"], dtype=torch.int32), a["mql"]).double()
    assert not torch.isnan(out).any(), ("NaN / unwritten output", c, a["lens"], a["qsl"], a["W"])
    err = (out - ref).abs().max().item() if out.numel() else 0.0
    splits += nparts > 1
    worst = max(worst, err)
    if err > 2e-5:
        print("MISMATCH case", c, err, "W", a["W"], "lens", a["lens"], "qsl", a["qsl"], "mql", a["mql"], "H/KVH", a["query"].shape[1], a["kc"].shape[2], "bs", a["kc"].shape[1], "parts", nparts)
        break
print("cases", n_cases, "split", splits, "worst err", worst)
