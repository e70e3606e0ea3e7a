// Forward declarations of the main cerberus types, for headers that only name them (function
// declarations, pointers, references) and want to stay cheap to include.
//
// Pulled in for their concepts: core/device.hpp (cpu, cuda, Device) and core/dtype.hpp (Element,
// which needs the complete bfloat16). Both are small and include no other cerberus header.
//
// Tensor is declared without its default device: the default (cpu) belongs to the definition in
// tensor/tensor.hpp, and a default argument may be given only once. With this header alone, spell
// the device out: `Tensor<float, cpu>`.
#pragma once

#include "cerberus/core/config.hpp"
#include "cerberus/core/device.hpp"
#include "cerberus/core/dtype.hpp"

namespace cerberus {

struct bfloat16;

class Shape;
using Strides = Shape;

template <Element T, Device D>
class Tensor;

template <class D>
class Storage;

struct ScalarOperand;
template <class F, class... Operands>
struct Expr;

struct Philox;
class Generator;

class Error;
class ShapeError;
class IndexError;
class ValueError;
class DeviceError;
class FileError;

}  // namespace cerberus
