//! Index ops on CUDA (in progress).
