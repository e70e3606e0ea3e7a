// Everything needed for CPU work in one include: tensors, expressions, autodiff and every op.
// For faster builds, include only the headers you use (each compiles on its own).
#pragma once

#include "cerberus/core/config.hpp"
#include "cerberus/backend/cpu/backend.hpp"
#include "cerberus/tensor/tensor.hpp"
#include "cerberus/expr/ops.hpp"
#include "cerberus/expr/evaluate.hpp"
#include "cerberus/tensor/factories.hpp"
#include "cerberus/tensor/print.hpp"
#include "cerberus/ops/reduce.hpp"
#include "cerberus/ops/softmax.hpp"
#include "cerberus/ops/matmul.hpp"
#include "cerberus/ops/indexing.hpp"
#include "cerberus/ops/embedding.hpp"
#include "cerberus/ops/dropout.hpp"
#include "cerberus/ops/norm.hpp"
#include "cerberus/ops/loss.hpp"
#include "cerberus/ops/attention.hpp"
