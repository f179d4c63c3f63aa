#pragma once
// Diagnostics only (compiled with -DSWA_OPS_TIMELINE; never in a normal build): each decode and
// merge CTA records when it started, when its griddepcontrol.wait returned, when its K/V loop
// ended, when all its warps' loops were done (decode) and when it finished, with its SM, into
// p.timeline (a device buffer the launcher takes from SWA_OPS_TIMELINE_PTR, sized by
// notes/timeline.py for kTimelineMergeBase decode and kTimelineMergeCtas merge records; CTAs past
// those write nothing). notes/timeline.py reads it: where a call's time over its floor goes
// (launch, ramp, the spread of the CTAs' ends, the combine, the merge).
#include "swa_ops/compat.h"

namespace swa_ops {

constexpr int kTimelineWords = 9;           // per CTA: the record below
constexpr int kTimelineMergeBase = 1 << 16;  // merge CTAs' records start at this CTA index
constexpr int kTimelineMergeCtas = 1 << 13;  // merge CTAs with a record

struct TimelineMarks {
  uint64_t start, waited, looped, synced;  // globaltimer, ns (synced: every warp's loop done)
  uint64_t stored;  // decode combine: the warps' partials in shared memory
};

SWA_D uint64_t timeline_ns() {
#if defined(SWA_OPS_TIMELINE) && !defined(USE_ROCM)
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
#else
  return 0;
#endif
}

SWA_D uint32_t timeline_smid() {
#if defined(SWA_OPS_TIMELINE) && !defined(USE_ROCM)
  uint32_t s;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(s));
  return s;
#else
  return 0;
#endif
}

// Thread 0 writes [start, waited, looped, end, smid | kind << 32, grid x, grid y, synced, stored]
// of CTA `cta`; kind 1: a decode CTA, 2: a merge CTA (0: no record).
SWA_D void timeline_write(unsigned long long* tl, int64_t cta, const TimelineMarks& m, int kind) {
  const int64_t lo = kind == 2 ? kTimelineMergeBase : 0;
  const int64_t hi = kind == 2 ? kTimelineMergeBase + kTimelineMergeCtas : kTimelineMergeBase;
  if (tl == nullptr || threadIdx.x != 0 || cta < lo || cta >= hi) return;
  unsigned long long* r = tl + cta * kTimelineWords;
  r[0] = m.start;
  r[1] = m.waited;
  r[2] = m.looped;
  r[3] = timeline_ns();
  r[4] = timeline_smid() | (static_cast<uint64_t>(kind) << 32);
  r[5] = blockIdx.x;
  r[6] = blockIdx.y;
  r[7] = m.synced;
  r[8] = m.stored;
}

}  // namespace swa_ops

// Hooks in the kernels: nothing at all without SWA_OPS_TIMELINE.
#ifdef SWA_OPS_TIMELINE
#define SWA_OPS_TL_DECL(marks) ::swa_ops::TimelineMarks marks{0, 0, 0, 0, 0}
#define SWA_OPS_TL_MARK(marks, field) (marks).field = ::swa_ops::timeline_ns()
#define SWA_OPS_TL_WRITE(p, cta, marks, kind) ::swa_ops::timeline_write((p).timeline, cta, marks, kind)
#else
#define SWA_OPS_TL_DECL(marks) static_assert(true, "")
#define SWA_OPS_TL_MARK(marks, field) ((void)0)
#define SWA_OPS_TL_WRITE(p, cta, marks, kind) ((void)0)
#endif
