// Multi-task composition: tasks, heads, sharing strategies and the model (namespace cerberus::mtl).
// Loss weightings live in cerberus/mtl/weighting/.
#pragma once

#include "cerberus/mtl/batch.hpp"
#include "cerberus/mtl/heads.hpp"
#include "cerberus/mtl/model.hpp"
#include "cerberus/mtl/sharing/adapters.hpp"
#include "cerberus/mtl/sharing/cross_stitch.hpp"
#include "cerberus/mtl/sharing/hard.hpp"
#include "cerberus/mtl/sharing/hierarchical.hpp"
#include "cerberus/mtl/sharing/moe.hpp"
#include "cerberus/mtl/sharing/soft.hpp"
#include "cerberus/mtl/task.hpp"
