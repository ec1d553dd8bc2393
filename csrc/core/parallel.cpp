#include "core/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sys/mman.h>
#define AXN_POSIX 1
#endif

#include "core/check.hpp"

namespace axn {

void check_num_threads(int64_t requested) {
  AXN_CHECK(0 <= requested && requested <= kMaxThreads,
            "num_threads must be between 0 (all cores) and " << kMaxThreads << ", got " << requested);
}

int plan_threads(int requested, double work, double min_work_per_thread) {
  check_num_threads(requested);
  int hw = static_cast<int>(std::thread::hardware_concurrency());
  if (hw <= 0) hw = 1;
  // More threads than cores only adds per-thread state (and thread starts
  // that may fail): beyond 4x the hardware threads, requests are trimmed.
  int t = requested > 0 ? std::min(requested, 4 * hw) : hw;
  t = std::min(t, kMaxThreads);
  const double by_work = work / min_work_per_thread;
  if (by_work < t) t = std::max(1, static_cast<int>(by_work));
  return t;
}

namespace {

#ifdef AXN_POSIX
// Address space for one more thread: its stack, the malloc arena glibc maps
// for a new thread (64 MiB), and room for what the thread allocates.
size_t thread_footprint() {
  size_t stack = 8u << 20;
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) == 0) {
    pthread_attr_getstacksize(&attr, &stack);
    pthread_attr_destroy(&attr);
  }
  return stack + (80u << 20);
}

// Whether `bytes` of address space can still be mapped (under ulimit -v /
// RLIMIT_AS). PROT_NONE and unreserved: no memory is touched.
bool room_for(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return false;
  munmap(p, bytes);
  return true;
}
#else
size_t thread_footprint() { return 0; }
bool room_for(size_t) { return true; }
#endif

}  // namespace

void parallel_for(int64_t n, int num_threads,
                  const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  const int t = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, n)));
  if (t == 1) {
    fn(0, n, 0);
    return;
  }
  // Parts are claimed from a shared counter, so whichever threads exist
  // (the caller's included) run all t of them, each exactly once.
  std::vector<std::exception_ptr> errors(t);
  std::atomic<int> next{0};
  auto worker = [&]() {
    // The C++ runtime allocates a thread's exception state on its first
    // throw, and glibc ends the process if that allocation fails: do it now,
    // so that running out of memory later in fn is an exception like any other.
    // (std::uncaught_exceptions is declared pure: keep its result.)
    volatile int warm = std::uncaught_exceptions();
    (void)warm;
    for (int i = next.fetch_add(1); i < t; i = next.fetch_add(1)) {
      const int64_t begin = n * i / t, end = n * (i + 1) / t;
      try {
        fn(begin, end, i);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  // Threads are started only while there is clearly room for them: under a
  // tight address-space limit a thread whose stack just fit would die on its
  // first allocation. Out of threads or memory (ulimit, a container's pids
  // limit), std::thread throws, and a joinable thread must never be destroyed
  // (that aborts the process): carry on with the threads that did start.
  std::vector<std::thread> threads;
  try {
    threads.reserve(t - 1);
    const size_t footprint = thread_footprint();
    for (int i = 1; i < t && room_for(footprint); ++i) threads.emplace_back(worker);
  } catch (...) {
  }
  worker();
  for (auto& th : threads) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace axn
