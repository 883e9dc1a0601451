// parallel_for: the engine's one way of running work on threads (the REC search, the decoder and
// the blocked elementwise kernels). Internal linkage, as the other header helpers.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace bbimg {
namespace {

// Runs f(item, thread_id) for item in [0, n) on up to `threads` threads (dynamic scheduling).
// Results never depend on the schedule: every item writes its own outputs.
template <class F>
void parallel_for(int64_t n, int threads, F&& f) {
    const int T = (int)std::max<int64_t>(1, std::min<int64_t>(threads, n));
    if (T <= 1) {
        for (int64_t i = 0; i < n; ++i) f(i, 0);
        return;
    }
    std::atomic<int64_t> next{0};
    std::exception_ptr err;
    std::mutex mu;
    auto worker = [&](int tid) {
        try {
            for (;;) {
                const int64_t i = next.fetch_add(1);
                if (i >= n) break;
                f(i, tid);
            }
        } catch (...) {
            std::lock_guard<std::mutex> lock(mu);
            if (!err) err = std::current_exception();
            next.store(n);
        }
    };
    std::vector<std::thread> ts;
    ts.reserve(T - 1);
    for (int t = 1; t < T; ++t) ts.emplace_back(worker, t);
    worker(0);
    for (auto& t : ts) t.join();
    if (err) std::rethrow_exception(err);
}

}  // namespace
}  // namespace bbimg
