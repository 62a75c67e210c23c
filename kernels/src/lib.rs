//! r1-kernels
