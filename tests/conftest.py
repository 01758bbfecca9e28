import os

import torch

# Without a GPU, Triton runs only interpreted, and the variable must be set before anything
# imports triton (test collection imports every module first).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
