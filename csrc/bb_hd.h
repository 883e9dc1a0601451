// Shared macros for code that is compiled both by the host C++ compiler and by nvcc.
//
// Every function in the shared headers lives in an unnamed namespace: each translation unit
// gets its own copy. This matters because one TU (rec_avx2.cpp) is compiled for AVX2+FMA and
// another for the baseline ISA; with ordinary `inline` linkage the linker could pick the AVX2
// copy for a call made from baseline code and crash on an old CPU.
#pragma once

#if defined(__CUDACC__)
#define BB_HD __host__ __device__ __forceinline__
#else
#define BB_HD inline
#endif

#if defined(__CUDACC__)
#define BB_UNROLL _Pragma("unroll")
#else
#define BB_UNROLL
#endif

// IEEE single-precision operations that must never be fused or reassociated. Host TUs are
// compiled with -ffp-contract=off (setup.py), so plain operators are exact there; on the device
// the _rn intrinsics are documented never to be contracted into FMA, whatever --fmad says.
#if defined(__CUDA_ARCH__)
#define BB_FADD(a, b) __fadd_rn((a), (b))
#define BB_FSUB(a, b) __fsub_rn((a), (b))
#define BB_FMUL(a, b) __fmul_rn((a), (b))
#define BB_FDIV(a, b) __fdiv_rn((a), (b))
#define BB_FSQRT(a) __fsqrt_rn((a))
#define BB_FMAF(a, b, c) __fmaf_rn((a), (b), (c))
#define BB_DADD(a, b) __dadd_rn((a), (b))
#define BB_DMUL(a, b) __dmul_rn((a), (b))
#else
#include <cmath>
#define BB_FADD(a, b) ((a) + (b))
#define BB_FSUB(a, b) ((a) - (b))
#define BB_FMUL(a, b) ((a) * (b))
#define BB_FDIV(a, b) ((a) / (b))
#define BB_FSQRT(a) std::sqrt((a))
#define BB_FMAF(a, b, c) std::fma((a), (b), (c))
#define BB_DADD(a, b) ((a) + (b))
#define BB_DMUL(a, b) ((a) * (b))
#endif
