# Steps of the package tests, run as `cmake -DSTEP=<step> ... -P steps.cmake` (see CMakeLists.txt).
# List arguments use "|" as separator (ctest would split on ";").
#
#   STEP=install          BUILD_DIR PREFIX CONFIG [SOURCE_DIR ARGS]: fresh `cmake --install` into
#                         PREFIX (after configuring SOURCE_DIR into BUILD_DIR with ARGS when given),
#                         then check that the files consumers rely on are there.
#   STEP=compile_run      CXX SOURCE OUTPUT FLAGS [PKG_CONFIG PKG_CONFIG_PATH]: one compiler call
#                         (flags from pkg-config when PKG_CONFIG is given), then run the program.
#   STEP=configure_fails  SOURCE_DIR BINARY_DIR ARGS EXPECT: configuring must fail and print EXPECT.
cmake_minimum_required(VERSION 3.25)

function(run_or_fail what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message("${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}): ${ARGN}")
  endif()
endfunction()

if(STEP STREQUAL "install")
  file(REMOVE_RECURSE "${PREFIX}")
  if(SOURCE_DIR)  # configure a fresh build of SOURCE_DIR into BUILD_DIR first, with ARGS
    string(REPLACE ";" "\\;" ARGS "${ARGS}")
    string(REPLACE "|" ";" ARGS "${ARGS}")
    file(REMOVE_RECURSE "${BUILD_DIR}")
    run_or_fail("configure" "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${BUILD_DIR}" ${ARGS})
  endif()
  run_or_fail("cmake --install" "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}" --config "${CONFIG}")
  foreach(file
      include/cerberus/cerberus.hpp
      include/cerberus/fwd.hpp
      share/cmake/cerberus/cerberusConfig.cmake
      share/cmake/cerberus/cerberusConfigVersion.cmake
      share/cmake/cerberus/cerberusTargets.cmake
      share/cmake/cerberus/cerberusTokenizerTargets.cmake
      share/cmake/cerberus/cerberusCudaTargets.cmake
      share/cmake/cerberus/cerberusDependencies.cmake
      share/cmake/cerberus/FindSentencePiece.cmake
      share/pkgconfig/cerberus.pc)
    if(NOT EXISTS "${PREFIX}/${file}")
      message(FATAL_ERROR "install: ${PREFIX}/${file} is missing")
    endif()
  endforeach()
  # The core targets file must not mention the optional dependencies.
  file(READ "${PREFIX}/share/cmake/cerberus/cerberusTargets.cmake" core_targets)
  if(core_targets MATCHES "SentencePiece|CUDA::")
    message(FATAL_ERROR "install: cerberusTargets.cmake refers to SentencePiece or CUDA")
  endif()

elseif(STEP STREQUAL "compile_run")
  string(REPLACE "|" ";" FLAGS "${FLAGS}")
  if(PKG_CONFIG)
    set(ENV{PKG_CONFIG_PATH} "${PKG_CONFIG_PATH}")
    execute_process(COMMAND "${PKG_CONFIG}" --cflags --libs cerberus
                    RESULT_VARIABLE rc OUTPUT_VARIABLE pc_flags ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "pkg-config --cflags --libs cerberus failed: ${err}")
    endif()
    message("pkg-config --cflags --libs cerberus: ${pc_flags}")
    if(NOT pc_flags MATCHES "-std=c\\+\\+20")
      message(FATAL_ERROR "cerberus.pc does not ask for -std=c++20")
    endif()
    separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
    list(APPEND FLAGS ${pc_flags})
  endif()
  run_or_fail("compile" "${CXX}" ${FLAGS} "${SOURCE}" -o "${OUTPUT}")
  run_or_fail("run" "${OUTPUT}")

elseif(STEP STREQUAL "configure_fails")
  string(REPLACE ";" "\\;" ARGS "${ARGS}")  # a ";" inside one argument (CMAKE_PREFIX_PATH) stays there
  string(REPLACE "|" ";" ARGS "${ARGS}")
  file(REMOVE_RECURSE "${BINARY_DIR}")
  execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${BINARY_DIR}" ${ARGS}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message("${out}")
  if(rc EQUAL 0)
    message(FATAL_ERROR "configure_fails: configuring succeeded, expected a failure matching '${EXPECT}'")
  endif()
  string(REGEX REPLACE "[ \t\r\n]+" " " flat "${out}")  # CMake wraps long messages
  if(NOT flat MATCHES "${EXPECT}")
    message(FATAL_ERROR "configure_fails: configuring failed, but without a message matching '${EXPECT}'")
  endif()

else()
  message(FATAL_ERROR "steps.cmake: unknown STEP '${STEP}'")
endif()
