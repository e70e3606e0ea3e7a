# Finds the core dependencies (Eigen, xsimd, threads). Shared by the build tree and by the
# installed package's config file, so both resolve dependencies the same way.
include(CMakeFindDependencyMacro)

# Eigen: found without a version (its version file is SameMajorVersion, which would reject
# Eigen 5 from vcpkg); the check below accepts 3.4 and later.
find_dependency(Eigen3 CONFIG)
if(DEFINED Eigen3_VERSION AND Eigen3_VERSION VERSION_LESS 3.4)
  message(FATAL_ERROR "cerberus needs Eigen 3.4 or later, found ${Eigen3_VERSION}")
endif()

# xsimd: Debian's target lists `xtl` as a link library without finding it; find xtl when it is
# there, else drop the dangling name so links do not fail with "cannot find -lxtl".
find_package(xtl CONFIG QUIET)
find_dependency(xsimd CONFIG)
if(TARGET xsimd AND NOT TARGET xtl)
  get_target_property(_cerberus_xsimd_libs xsimd INTERFACE_LINK_LIBRARIES)
  if(_cerberus_xsimd_libs)
    list(REMOVE_ITEM _cerberus_xsimd_libs xtl)
    set_target_properties(xsimd PROPERTIES INTERFACE_LINK_LIBRARIES "${_cerberus_xsimd_libs}")
  endif()
endif()

set(THREADS_PREFER_PTHREAD_FLAG ON)
find_dependency(Threads)
