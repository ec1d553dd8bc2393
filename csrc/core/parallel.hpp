#pragma once
// Splitting work over threads without a persistent pool.
//
// Threads are started per call and joined before returning, so nothing is left
// running between calls: a process that forks afterwards (multiprocessing,
// DataLoader workers, pre-forking servers) gets a clean child, which GNU
// OpenMP's persistent team does not guarantee.
#include <cstdint>
#include <functional>

namespace axn {

// Number of threads to use for `work` units of arithmetic when `requested`
// threads are allowed (requested <= 0 means all hardware threads): small jobs
// stay single-threaded because starting a thread costs ~20-50 us.
int plan_threads(int requested, double work, double min_work_per_thread = 1 << 19);

// Runs fn(begin, end, thread_index) over contiguous parts of [0, n) on
// `num_threads` threads (the caller's thread runs part 0). The first exception
// thrown by any part is rethrown after all threads have joined.
void parallel_for(int64_t n, int num_threads,
                  const std::function<void(int64_t, int64_t, int)>& fn);

}  // namespace axn
