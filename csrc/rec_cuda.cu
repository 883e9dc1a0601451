// CUDA producer of REC chunk statistics. Uses the same Philox, normals (detmath.h), score
// order (score_step: e2 = e*e, fma(a, e2, acc), fma(c, e, acc), k ascending) and selection
// arithmetic (rec_select.h) as the CPU engine, so the per-(block, chunk) statistics, and hence
// the chosen indices, are identical. Compiled with --fmad=false; the shared helpers use
// __f*_rn / __d*_rn intrinsics, which are never contracted, in device code.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "detmath.h"
#include "philox.h"
#include "rec.h"
#include "rec_select.h"

namespace bbimg {
namespace {

#define BB_CK(x)                                                                          \
    do {                                                                                  \
        cudaError_t err_ = (x);                                                           \
        if (err_ != cudaSuccess)                                                          \
            throw ArgError(std::string("CUDA error: ") + cudaGetErrorString(err_) + " (" + \
                           #x + ")");                                                     \
    } while (0)

template <class T>
struct DevBuf {
    T* p = nullptr;
    size_t n = 0;
    DevBuf() = default;
    explicit DevBuf(size_t count) { alloc(count); }
    void alloc(size_t count) {
        if (count <= n) return;
        if (p) cudaFree(p);
        p = nullptr;
        n = 0;
        BB_CK(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)));
        n = count;
    }
    void upload(const T* h, size_t count) {
        alloc(count);
        if (count) BB_CK(cudaMemcpy(p, h, count * sizeof(T), cudaMemcpyHostToDevice));
    }
    ~DevBuf() {
        if (p) cudaFree(p);
    }
    DevBuf(const DevBuf&) = delete;
    DevBuf& operator=(const DevBuf&) = delete;
};

__global__ void k_gen_pool(uint64_t seed, uint32_t n0, int64_t rows, int64_t groups, float* E) {
    const int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (t >= rows * groups) return;
    const int64_t r = t % rows, g = t / rows;
    float z[4];
    det_normal4(philox_seed(seed, (uint32_t)g, n0 + (uint32_t)r, 0u, TAG_POOL), z);
    for (int i = 0; i < 4; ++i) E[(4 * g + i) * rows + r] = z[i];
}

// Scores of the active pool blocks for one chunk: S[j * rows + r].
__global__ void k_score_pool(const float* E, int64_t rows, const int64_t* start, const int32_t* len,
                             int64_t nblk, const float* A, const float* C, float* S) {
    const int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (r >= rows) return;
    for (int64_t j = blockIdx.y; j < nblk; j += gridDim.y) {
        const int64_t s0 = start[j];
        const int32_t L = len[j];
        float acc = 0.0f;
        for (int32_t k = 0; k < L; ++k) acc = score_step(acc, A[s0 + k], C[s0 + k], E[k * rows + r]);
        S[j * rows + r] = acc;
    }
}

// Scores of private blocks (k < REC_POOL_MIN_BITS): normals generated on the fly.
__global__ void k_score_private(uint64_t seed, int64_t ld, const int64_t* bid, const int64_t* start,
                                const int32_t* len, const int32_t* nrows, int64_t nblk,
                                const float* A, const float* C, float* S) {
    const int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    for (int64_t j = blockIdx.y; j < nblk; j += gridDim.y) {
        if (r >= nrows[j]) continue;
        const uint64_t b = (uint64_t)bid[j];
        const int64_t s0 = start[j];
        const int32_t L = len[j];
        float acc = 0.0f;
        for (int32_t g = 0; 4 * g < L; ++g) {
            float z[4];
            det_normal4(philox_seed(seed, (uint32_t)g | ((uint32_t)r << 16), (uint32_t)b,
                                    (uint32_t)(b >> 32), TAG_PRIVATE),
                        z);
            for (int i = 0; i < 4 && 4 * g + i < L; ++i) {
                const int64_t k = 4 * g + i;
                acc = score_step(acc, A[s0 + k], C[s0 + k], z[i]);
            }
        }
        S[j * ld + r] = acc;
    }
}

// One thread per block: statistics of its chunk (rows valid of ld), as chunk_stat on the CPU.
__global__ void k_stats(const float* S, int64_t ld, const int64_t* bid, const int32_t* nrows,
                        int64_t nblk, uint32_t chunk, uint32_t n_base, int sample, uint64_t seed,
                        float* W, float* V, ChunkStat* out) {
    const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (j >= nblk) return;
    const float* x = S + j * ld;
    const int64_t R = nrows[j];
    float m;
    int64_t am;
    first_argmax(x, R, &m, &am);
    ChunkStat st;
    st.m = m;
    st.s = 0.0;
    if (!sample) {
        st.n = n_base + (uint32_t)am;
        out[j] = st;
        return;
    }
    const int64_t nv = (R + 7) / 8;
    float* w = W + j * ld;
    float* v = V + j * (ld / 8);
    for (int64_t r = 0; r < nv * 8; ++r) w[r] = r < R ? det_exp_weight(BB_FSUB(x[r], m)) : 0.0f;
    double s = 0.0;
    for (int64_t i = 0; i < nv; ++i) {
        v[i] = tree8(w + 8 * i);
        s = BB_DADD(s, (double)v[i]);
    }
    st.s = s;
    const double t = BB_DMUL(chunk_pick_u(seed, (uint64_t)bid[j], chunk), s);
    st.n = n_base + (uint32_t)pick_in_weights(w, v, nv, t);
    out[j] = st;
}

int64_t round4(int64_t x) { return (x + 3) & ~(int64_t)3; }

// One pass's blocks (pool or private) as device arrays: block id, first dim, length and the
// candidate rows of one chunk (REC_CHUNK for pool blocks, 2^k for private ones). The host
// copies stay readable.
struct DevBlocks {
    std::vector<int64_t> bid, start;
    std::vector<int32_t> len, nrows;
    DevBuf<int64_t> d_bid, d_start;
    DevBuf<int32_t> d_len, d_nrows;
    DevBlocks(const RecSetup& S, const std::vector<int64_t>& blocks, bool pool) {
        for (const int64_t b : blocks) {
            bid.push_back(b);
            start.push_back(S.start[b]);
            len.push_back(S.len[b]);
            nrows.push_back(pool ? (int32_t)REC_CHUNK : (int32_t)1 << S.k[b]);
        }
        d_bid.upload(bid.data(), bid.size());
        d_start.upload(start.data(), start.size());
        d_len.upload(len.data(), len.size());
        d_nrows.upload(nrows.data(), nrows.size());
    }
};

}  // namespace

bool rec_cuda_compiled() { return true; }

bool rec_cuda_available() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return n > 0;
}

std::string rec_cuda_info() {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return std::string("built with CUDA; no usable device: ") + cudaGetErrorString(e);
    }
    if (n == 0) return "built with CUDA; no device";
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "built with CUDA";
    return std::string("CUDA device 0: ") + prop.name;
}

void rec_stats_cuda(const RecSetup& S, std::vector<ChunkStat>& stats) {
    if (!rec_cuda_available()) throw ArgError("CUDA is not available: " + rec_cuda_info());
    stats.assign(S.n_stats, ChunkStat{0.0f, 0u, 0.0});
    const int sample = S.tau > 0.0 ? 1 : 0;
    DevBuf<float> dA, dC;
    dA.upload(S.A.data(), S.A.size());
    dC.upload(S.C.data(), S.C.size());
    const int threads = 128;

    // ---- pool blocks, chunk by chunk (S.pool_blocks is sorted by k descending) ----
    const int64_t np = (int64_t)S.pool_blocks.size();
    if (np > 0) {
        const DevBlocks blk(S, S.pool_blocks, true);
        std::vector<int64_t> nch(np);
        for (int64_t q = 0; q < np; ++q) nch[q] = (int64_t)1 << (S.k[blk.bid[q]] - REC_POOL_MIN_BITS);
        DevBuf<float> dE, dS, dW, dV;
        DevBuf<ChunkStat> dst(np);
        std::vector<ChunkStat> hst(np);
        const int64_t maxch = nch[0];
        int64_t active = np;
        for (int64_t c = 0; c < maxch; ++c) {
            while (active > 0 && nch[active - 1] <= c) --active;
            int32_t Pmax = 0;
            for (int64_t q = 0; q < active; ++q) Pmax = std::max(Pmax, blk.len[q]);
            const int64_t groups = round4(Pmax) / 4;
            dE.alloc((size_t)(REC_CHUNK * groups * 4));
            dS.alloc((size_t)(REC_CHUNK * active));
            if (sample) {
                dW.alloc((size_t)(REC_CHUNK * active));
                dV.alloc((size_t)(REC_CHUNK / 8 * active));
            }
            const uint32_t n0 = (uint32_t)(c * REC_CHUNK);
            const int64_t tot = REC_CHUNK * groups;
            k_gen_pool<<<(unsigned)((tot + threads - 1) / threads), threads>>>(S.seed, n0, REC_CHUNK,
                                                                               groups, dE.p);
            dim3 grid((unsigned)((REC_CHUNK + threads - 1) / threads),
                      (unsigned)std::min<int64_t>(active, 65535));
            k_score_pool<<<grid, threads>>>(dE.p, REC_CHUNK, blk.d_start.p, blk.d_len.p, active, dA.p,
                                            dC.p, dS.p);
            k_stats<<<(unsigned)((active + threads - 1) / threads), threads>>>(
                dS.p, REC_CHUNK, blk.d_bid.p, blk.d_nrows.p, active, (uint32_t)c, n0, sample, S.seed,
                sample ? dW.p : nullptr, sample ? dV.p : nullptr, dst.p);
            BB_CK(cudaGetLastError());
            BB_CK(cudaMemcpy(hst.data(), dst.p, active * sizeof(ChunkStat), cudaMemcpyDeviceToHost));
            for (int64_t q = 0; q < active; ++q) stats[S.stat_off[blk.bid[q]] + c] = hst[q];
        }
    }

    // ---- private blocks: one chunk each ----
    const int64_t npv = (int64_t)S.private_blocks.size();
    if (npv > 0) {
        const DevBlocks blk(S, S.private_blocks, false);
        const int64_t ld = 1 << (REC_POOL_MIN_BITS - 1);  // >= every private block's rows
        DevBuf<float> dS((size_t)(ld * npv)), dW, dV;
        if (sample) {
            dW.alloc((size_t)(ld * npv));
            dV.alloc((size_t)(ld / 8 * npv));
        }
        DevBuf<ChunkStat> dst(npv);
        dim3 grid((unsigned)((ld + threads - 1) / threads), (unsigned)std::min<int64_t>(npv, 65535));
        k_score_private<<<grid, threads>>>(S.seed, ld, blk.d_bid.p, blk.d_start.p, blk.d_len.p,
                                           blk.d_nrows.p, npv, dA.p, dC.p, dS.p);
        k_stats<<<(unsigned)((npv + threads - 1) / threads), threads>>>(
            dS.p, ld, blk.d_bid.p, blk.d_nrows.p, npv, 0u, 0u, sample, S.seed, sample ? dW.p : nullptr,
            sample ? dV.p : nullptr, dst.p);
        BB_CK(cudaGetLastError());
        std::vector<ChunkStat> hst(npv);
        BB_CK(cudaMemcpy(hst.data(), dst.p, npv * sizeof(ChunkStat), cudaMemcpyDeviceToHost));
        for (int64_t q = 0; q < npv; ++q) stats[S.stat_off[blk.bid[q]]] = hst[q];
    }
}

}  // namespace bbimg
