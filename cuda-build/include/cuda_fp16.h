// Emulation stand-in for the CUDA toolkit's <cuda_fp16.h>: everything the kernels may use from it is
// declared by cuda_emu.h (see there), so that kernels/cuda/*.cu include it unchanged.
#pragma once
#include "cuda_emu.h"
