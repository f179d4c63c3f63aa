"""Runs swa_ops' decode on one bench shape a few times, for ncu: python notes/profile_decode.py NAME"""
import sys

import torch

from swa_ops import bench

shape = next(s for s in bench.SHAPES if s.name == sys.argv[1])
pb = bench.Problem(shape, 1, "cuda")
for i in range(4):
    pb.swa(i)
torch.cuda.synchronize()
