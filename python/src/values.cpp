// Conversions between Python objects and pasyn values (see values.hpp).
#include "values.hpp"

#include <pasyn/errors.hpp>

#include <Python.h>

#include <cstdint>
#include <string>

namespace pasyn::python {

Value to_value(nb::handle o) {
  PyObject* p = o.ptr();
  if (p == Py_None) return nullptr;
  if (PyBool_Check(p)) return std::int64_t{p == Py_True ? 1 : 0};
  if (PyLong_Check(p)) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(p, &overflow);
    if (overflow != 0) {  // OverflowError, as Python's sqlite3 raises (no silent wrap)
      PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to SQLite INTEGER");
      throw nb::python_error();
    }
    if (v == -1 && PyErr_Occurred()) throw nb::python_error();
    return std::int64_t{v};
  }
  if (PyFloat_Check(p)) return PyFloat_AS_DOUBLE(p);
  if (PyUnicode_Check(p)) return std::string(utf8(o));
  if (PyBytes_Check(p)) {
    const auto* data = reinterpret_cast<const std::uint8_t*>(PyBytes_AS_STRING(p));
    return Blob(data, data + PyBytes_GET_SIZE(p));
  }
  if (PyByteArray_Check(p)) {
    const auto* data = reinterpret_cast<const std::uint8_t*>(PyByteArray_AS_STRING(p));
    return Blob(data, data + PyByteArray_GET_SIZE(p));
  }
  if (PyMemoryView_Check(p)) {
    Py_buffer view;
    if (PyObject_GetBuffer(p, &view, PyBUF_CONTIG_RO) != 0) throw nb::python_error();
    const auto* data = static_cast<const std::uint8_t*>(view.buf);
    Blob blob(data, data + view.len);
    PyBuffer_Release(&view);
    return blob;
  }
  throw nb::type_error(
      ("unsupported parameter type: " + std::string(nb::type_name(o.type()).c_str())).c_str());
}

AnyParams to_params(nb::handle o) {
  PyObject* p = o.ptr();
  if (p == nullptr || p == Py_None) return Params{};
  if (PyDict_Check(p)) {
    NamedParams named;
    named.values.reserve(static_cast<std::size_t>(PyDict_Size(p)));
    PyObject* key = nullptr;
    PyObject* value = nullptr;
    Py_ssize_t pos = 0;
    while (PyDict_Next(p, &pos, &key, &value)) {
      if (!PyUnicode_Check(key)) throw nb::type_error("named parameter keys must be str");
      named.values.emplace_back(std::string(utf8(key)), to_value(value));
    }
    return named;
  }
  if (PyList_Check(p) || PyTuple_Check(p)) {
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(p);
    PyObject** items = PySequence_Fast_ITEMS(p);
    Params params;
    params.reserve(static_cast<std::size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) params.push_back(to_value(items[i]));
    return params;
  }
  return Params{to_value(o)};
}

std::variant<std::vector<Params>, std::vector<NamedParams>> to_params_batch(nb::handle o) {
  std::vector<Params> positional;
  std::vector<NamedParams> named;
  bool any = false, is_named = false;
  for (nb::handle item : o) {
    AnyParams params = to_params(item);
    const bool this_named = std::holds_alternative<NamedParams>(params);
    if (any && this_named != is_named) {
      throw nb::type_error("execute_many: mixed named (dict) and positional parameter sets");
    }
    any = true;
    is_named = this_named;
    if (this_named) {
      named.push_back(std::move(std::get<NamedParams>(params)));
    } else {
      positional.push_back(std::move(std::get<Params>(params)));
    }
  }
  if (is_named) return named;
  return positional;
}

nb::object to_python(const Value& v) {
  switch (type_of(v)) {
    case ValueType::kNull:
      return nb::none();
    case ValueType::kInteger:
      return nb::steal(PyLong_FromLongLong(std::get<std::int64_t>(v)));
    case ValueType::kReal:
      return nb::steal(PyFloat_FromDouble(std::get<double>(v)));
    case ValueType::kText: {
      const auto& s = std::get<std::string>(v);
      PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), nullptr);
      if (o == nullptr) {
        // As Python's sqlite3 does, rather than change the text unseen (which writing it back
        // would store): OperationalError.
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) throw nb::python_error();
        PyErr_Clear();
        throw OperationalError(
            "Could not decode to UTF-8: a TEXT value is not valid UTF-8 (read it as bytes with "
            "CAST(column AS BLOB))",
            1, 1);
      }
      return nb::steal(o);
    }
    case ValueType::kBlob: {
      const auto& b = std::get<Blob>(v);
      return nb::steal(PyBytes_FromStringAndSize(reinterpret_cast<const char*>(b.data()),
                                                 static_cast<Py_ssize_t>(b.size())));
    }
  }
  return nb::none();
}

nb::tuple to_python(const Row& row) {
  PyObject* t = PyTuple_New(static_cast<Py_ssize_t>(row.size()));
  if (t == nullptr) throw nb::python_error();
  nb::tuple result = nb::steal<nb::tuple>(t);
  for (std::size_t i = 0; i < row.size(); ++i) {
    PyTuple_SET_ITEM(t, static_cast<Py_ssize_t>(i), to_python(row[i]).release().ptr());
  }
  return result;
}

nb::list to_python(const std::vector<Row>& rows) {
  PyObject* l = PyList_New(static_cast<Py_ssize_t>(rows.size()));
  if (l == nullptr) throw nb::python_error();
  nb::list result = nb::steal<nb::list>(l);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    PyList_SET_ITEM(l, static_cast<Py_ssize_t>(i), to_python(rows[i]).release().ptr());
  }
  return result;
}

std::string_view utf8(nb::handle str) {
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(str.ptr(), &size);
  if (data == nullptr) throw nb::python_error();
  return {data, static_cast<std::size_t>(size)};
}

std::string fs_path(nb::handle path) {
  PyObject* bytes = nullptr;
  if (PyUnicode_FSConverter(path.ptr(), &bytes) == 0) throw nb::python_error();
  const nb::object owner = nb::steal(bytes);
  return {PyBytes_AS_STRING(bytes), static_cast<std::size_t>(PyBytes_GET_SIZE(bytes))};
}

std::int64_t to_int(const nb::int_& value, std::int64_t lo, std::int64_t hi) {
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (v == -1 && PyErr_Occurred()) throw nb::python_error();
  if (overflow != 0 || v < lo || v > hi) {
    const std::string message =
        "int out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    PyErr_SetString(PyExc_OverflowError, message.c_str());
    throw nb::python_error();
  }
  return v;
}

std::uint64_t to_u64(const nb::int_& value) {
  const unsigned long long v = PyLong_AsUnsignedLongLong(value.ptr());
  if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) throw nb::python_error();
  return v;
}

}  // namespace pasyn::python
