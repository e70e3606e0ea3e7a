// Everything needed for CPU work in one include.
#pragma once

#include "cerberus/core/config.hpp"
#include "cerberus/backend/cpu/backend.hpp"
#include "cerberus/tensor/tensor.hpp"
#include "cerberus/expr/ops.hpp"
#include "cerberus/expr/evaluate.hpp"
#include "cerberus/tensor/factories.hpp"
#include "cerberus/tensor/print.hpp"
