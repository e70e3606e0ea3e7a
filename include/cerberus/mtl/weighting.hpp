// Every loss weighting and gradient-surgery method of cerberus::mtl (see docs/multitask.md):
// Static, RuntimeStatic, Equal, Uncertainty, DWA, GradNorm, RLW, PCGrad, MGDA, CAGrad.
#pragma once

#include "cerberus/mtl/weighting/concept.hpp"
#include "cerberus/mtl/weighting/static.hpp"
#include "cerberus/mtl/weighting/uncertainty.hpp"
#include "cerberus/mtl/weighting/dwa.hpp"
#include "cerberus/mtl/weighting/gradnorm.hpp"
#include "cerberus/mtl/weighting/rlw.hpp"
#include "cerberus/mtl/weighting/pcgrad.hpp"
#include "cerberus/mtl/weighting/mgda.hpp"
#include "cerberus/mtl/weighting/cagrad.hpp"

namespace cerberus::mtl {
static_assert(LossWeighting<Static<1.0>> && LossWeighting<RuntimeStatic> && LossWeighting<Equal> && LossWeighting<Uncertainty> &&
              LossWeighting<DWA> && LossWeighting<GradNorm> && LossWeighting<RLW> && LossWeighting<PCGrad> && LossWeighting<MGDA> &&
              LossWeighting<CAGrad>);
// Every weighting takes bf16 shared parameters too (mixed precision).
static_assert(LossWeighting<Static<1.0>, bfloat16> && LossWeighting<RuntimeStatic, bfloat16> && LossWeighting<Equal, bfloat16> &&
              LossWeighting<Uncertainty, bfloat16> && LossWeighting<DWA, bfloat16> && LossWeighting<GradNorm, bfloat16> &&
              LossWeighting<RLW, bfloat16> && LossWeighting<PCGrad, bfloat16> && LossWeighting<MGDA, bfloat16> &&
              LossWeighting<CAGrad, bfloat16>);
// The weightings with statistics outside their parameters save and restore them (state.hpp); the
// others declare neither half.
static_assert(HasWeightingState<DWA> && HasWeightingState<GradNorm> && HasWeightingState<RLW> &&
              HasWeightingState<PCGrad>);
static_assert(!DeclaresWeightingState<Static<1.0>> && !DeclaresWeightingState<RuntimeStatic> && !DeclaresWeightingState<Equal> &&
              !DeclaresWeightingState<Uncertainty> && !DeclaresWeightingState<MGDA> && !DeclaresWeightingState<CAGrad>);
}  // namespace cerberus::mtl
