//! Index kernels (in progress).
