#include "core/parallel.hpp"

#include <algorithm>
#include <exception>
#include <thread>
#include <vector>

namespace axn {

int plan_threads(int requested, double work, double min_work_per_thread) {
  int hw = static_cast<int>(std::thread::hardware_concurrency());
  if (hw <= 0) hw = 1;
  int t = requested > 0 ? requested : hw;
  const double by_work = work / min_work_per_thread;
  if (by_work < t) t = std::max(1, static_cast<int>(by_work));
  return t;
}

void parallel_for(int64_t n, int num_threads,
                  const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  const int t = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, n)));
  if (t == 1) {
    fn(0, n, 0);
    return;
  }
  std::vector<std::exception_ptr> errors(t);
  auto run_part = [&](int i) {
    const int64_t begin = n * i / t, end = n * (i + 1) / t;
    try {
      fn(begin, end, i);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(t - 1);
  for (int i = 1; i < t; ++i) threads.emplace_back(run_part, i);
  run_part(0);
  for (auto& th : threads) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace axn
