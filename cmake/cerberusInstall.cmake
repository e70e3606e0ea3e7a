# Install rules: the headers, the CMake package (core + one targets file per optional component)
# and a pkg-config file. Included from the top-level CMakeLists.txt after the targets exist.
#
# Layout under the prefix (header-only, so nothing architecture dependent):
#   include/cerberus/...                      headers
#   share/cmake/cerberus/                     cerberusConfig.cmake, cerberusConfigVersion.cmake,
#                                             cerberusTargets.cmake (core),
#                                             cerberusTokenizerTargets.cmake, cerberusCudaTargets.cmake,
#                                             cerberusDependencies.cmake, FindSentencePiece.cmake
#   share/pkgconfig/cerberus.pc

option(CERBERUS_INSTALL "Generate install rules (headers, CMake package, pkg-config file)" ${PROJECT_IS_TOP_LEVEL})
if(NOT CERBERUS_INSTALL)
  return()
endif()

include(CMakePackageConfigHelpers)

set(CERBERUS_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/cerberus"
    CACHE STRING "Where the CMake package files are installed (relative to the prefix)")
set(CERBERUS_INSTALL_PKGCONFIGDIR "${CMAKE_INSTALL_DATADIR}/pkgconfig"
    CACHE STRING "Where cerberus.pc is installed (relative to the prefix)")
mark_as_advanced(CERBERUS_INSTALL_CMAKEDIR CERBERUS_INSTALL_PKGCONFIGDIR)

# ---- headers -------------------------------------------------------------------------------------
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/cerberus" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        FILES_MATCHING PATTERN "*.hpp" PATTERN "*.cuh" PATTERN "*.h")

# ---- targets: one export set per component -------------------------------------------------------
# A consumer of the core loads only cerberusTargets.cmake and never looks for SentencePiece or CUDA.
install(TARGETS cerberus EXPORT cerberusTargets)
install(EXPORT cerberusTargets NAMESPACE cerberus:: DESTINATION "${CERBERUS_INSTALL_CMAKEDIR}")

install(TARGETS cerberus_tokenizer EXPORT cerberusTokenizerTargets)
install(EXPORT cerberusTokenizerTargets NAMESPACE cerberus:: DESTINATION "${CERBERUS_INSTALL_CMAKEDIR}")

install(TARGETS cerberus_cuda EXPORT cerberusCudaTargets)
install(EXPORT cerberusCudaTargets NAMESPACE cerberus:: DESTINATION "${CERBERUS_INSTALL_CMAKEDIR}")

# ---- config, version and the files the config includes -------------------------------------------
configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/cerberusConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/cerberusConfig.cmake"
  INSTALL_DESTINATION "${CERBERUS_INSTALL_CMAKEDIR}")
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/cerberusConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMajorVersion
  ARCH_INDEPENDENT)
install(FILES
  "${PROJECT_BINARY_DIR}/cerberusConfig.cmake"
  "${PROJECT_BINARY_DIR}/cerberusConfigVersion.cmake"
  "${CMAKE_CURRENT_LIST_DIR}/cerberusDependencies.cmake"
  "${CMAKE_CURRENT_LIST_DIR}/FindSentencePiece.cmake"
  DESTINATION "${CERBERUS_INSTALL_CMAKEDIR}")

# ---- pkg-config ----------------------------------------------------------------------------------
# The prefix is computed from the .pc file's own location, so the installed tree stays relocatable
# (cmake --install --prefix elsewhere, vcpkg, Conan) unless the directories were given as absolute.
if(IS_ABSOLUTE "${CERBERUS_INSTALL_PKGCONFIGDIR}")
  set(CERBERUS_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _cerberus_pc_up "/prefix/${CERBERUS_INSTALL_PKGCONFIGDIR}" "/prefix")
  string(REGEX REPLACE "/$" "" _cerberus_pc_up "${_cerberus_pc_up}")
  set(CERBERUS_PC_PREFIX "\${pcfiledir}/${_cerberus_pc_up}")
  unset(_cerberus_pc_up)
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(CERBERUS_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(CERBERUS_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file("${CMAKE_CURRENT_LIST_DIR}/cerberus.pc.in" "${PROJECT_BINARY_DIR}/cerberus.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/cerberus.pc" DESTINATION "${CERBERUS_INSTALL_PKGCONFIGDIR}")
