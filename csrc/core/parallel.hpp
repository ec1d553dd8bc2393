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

// The most threads any call may be asked for: a fixed bound, the same on every
// machine, far above any core count a single process can use well.
constexpr int kMaxThreads = 1024;

// Throws std::invalid_argument naming num_threads unless 0 <= requested <= kMaxThreads.
void check_num_threads(int64_t requested);

// Number of threads to use for `work` units of arithmetic when `requested`
// threads are allowed: requested == 0 means all hardware threads; a request
// above 4x the hardware threads is trimmed to that; outside [0, kMaxThreads]
// std::invalid_argument. Small jobs stay single-threaded because starting a
// thread costs ~20-50 us.
int plan_threads(int requested, double work, double min_work_per_thread = 1 << 19);

// Runs fn(begin, end, part) over min(num_threads, n) contiguous parts of
// [0, n) (part = 0, 1, ...; each run exactly once, by one thread, so state
// indexed by part needs no lock) on up to num_threads threads, the caller's
// included. When the system refuses to start a thread (thread or memory
// limits; a thread is also not started when less address space is left than
// it would need), the threads that did start run the remaining parts: the
// work is done all the same, on fewer threads. The first exception thrown by
// any part is rethrown after all threads have joined.
void parallel_for(int64_t n, int num_threads,
                  const std::function<void(int64_t, int64_t, int)>& fn);

}  // namespace axn
