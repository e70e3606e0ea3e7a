// Exceptions. Every message starts with the op in brackets, mlx-style: "[matmul] ...", and a
// shape problem names both shapes.
#pragma once

#include <stdexcept>
#include <string>

namespace cerberus {

// Base of every error the library throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Operand shapes that do not fit the op.
class ShapeError : public Error {
 public:
  using Error::Error;
};

// An axis, index or range outside its bounds.
class IndexError : public Error {
 public:
  using Error::Error;
};

// An argument value the op cannot accept (negative step, empty range, ...).
class ValueError : public Error {
 public:
  using Error::Error;
};

// A device or driver call failed (CUDA, cuBLAS).
class DeviceError : public Error {
 public:
  using Error::Error;
};

// A file could not be read or written, or its contents were not what was expected.
class FileError : public Error {
 public:
  using Error::Error;
};

}  // namespace cerberus
