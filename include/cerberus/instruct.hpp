// Instruction data: templates and the task registry, task mixtures, collation into batches.
#pragma once

#include "cerberus/instruct/batches.hpp"
#include "cerberus/instruct/collate.hpp"
#include "cerberus/instruct/mixture.hpp"
#include "cerberus/instruct/templates.hpp"
