#pragma once
// Argument checks for the C++ core: they throw std::invalid_argument (mapped to
// ValueError by pybind11) and never vanish in release builds, unlike assert.
#include <sstream>
#include <stdexcept>
#include <string>

#define AXN_CHECK(cond, msg)                                   \
  do {                                                         \
    if (!(cond)) {                                             \
      std::ostringstream axn_check_os_;                        \
      axn_check_os_ << msg;                                    \
      throw std::invalid_argument(axn_check_os_.str());        \
    }                                                          \
  } while (0)
