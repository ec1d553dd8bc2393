#pragma once
// Integer arguments taken as Python objects and converted here, so that a
// wrong type or an out-of-range value gets an error naming the argument and
// the accepted range instead of pybind11's "incompatible function arguments".
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace axn::bindings {

namespace py = pybind11;

// obj as an exact Python integer (bool refused; numpy integers accepted).
inline py::int_ as_py_int(py::handle obj, const char* name) {
  if (PyBool_Check(obj.ptr()) || !PyIndex_Check(obj.ptr()))
    throw py::type_error(std::string(name) + " must be an integer, got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  PyObject* v = PyNumber_Index(obj.ptr());
  if (!v) throw py::error_already_set();
  return py::reinterpret_steal<py::int_>(v);
}

[[noreturn]] inline void out_of_range(const char* name, const py::int_& v, const std::string& lo,
                                      const std::string& hi, const std::string& why) {
  throw py::value_error(std::string(name) + " must be between " + lo + " and " + hi + why + ", got " +
                        std::string(py::str(v)));
}

// obj as an int64 in [lo, hi]; `why` (e.g. " (the number of items)") follows the range in the message.
inline int64_t int_arg(py::handle obj, const char* name, int64_t lo, int64_t hi, const std::string& why = "") {
  const py::int_ v = as_py_int(obj, name);
  int overflow = 0;
  const long long x = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
  if (x == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow || x < lo || x > hi) out_of_range(name, v, std::to_string(lo), std::to_string(hi), why);
  return static_cast<int64_t>(x);
}

// obj as a uint64 (e.g. a seed).
inline uint64_t uint64_arg(py::handle obj, const char* name) {
  const py::int_ v = as_py_int(obj, name);
  if (PyObject_RichCompareBool(v.ptr(), py::int_(0).ptr(), Py_LT) == 1)
    out_of_range(name, v, "0", std::to_string(UINT64_MAX), "");
  const unsigned long long x = PyLong_AsUnsignedLongLong(v.ptr());
  if (x == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
    PyErr_Clear();
    out_of_range(name, v, "0", std::to_string(UINT64_MAX), "");
  }
  return static_cast<uint64_t>(x);
}

}  // namespace axn::bindings
