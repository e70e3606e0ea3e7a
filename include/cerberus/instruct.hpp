// Instruction data: templates and the task registry, task mixtures, collation into batches,
// prediction (predict(text, instruction) on a multi-task model).
#pragma once

#include "cerberus/instruct/batches.hpp"
#include "cerberus/instruct/collate.hpp"
#include "cerberus/instruct/mixture.hpp"
#include "cerberus/instruct/predict.hpp"
#include "cerberus/instruct/templates.hpp"
