# FindSentencePiece
# -----------------
# Finds Google's SentencePiece (the runtime library and the trainer library) and defines:
#
#   SentencePiece::SentencePiece   INTERFACE target: headers + sentencepiece + sentencepiece_train
#   SentencePiece_FOUND, SentencePiece_VERSION (when known)
#   SentencePiece_INCLUDE_DIR, SentencePiece_LIBRARY, SentencePiece_TRAIN_LIBRARY (pkg-config route)
#
# Lookup order:
#   1. an upstream CMake package `sentencepiece` (CONFIG mode): newer upstream releases and Conan's
#      CMakeDeps provide sentencepiece::sentencepiece and sentencepiece::sentencepiece_train;
#   2. pkg-config module `sentencepiece` (Debian's libsentencepiece-dev and vcpkg ship only this),
#      used as hints for find_path/find_library, which also work without pkg-config
#      (set SentencePiece_ROOT or CMAKE_PREFIX_PATH).
#
# Shipped with cerberus' CMake package and used by its `tokenizer` component.

if(TARGET SentencePiece::SentencePiece)
  set(SentencePiece_FOUND TRUE)
  return()
endif()

# ---- 1. upstream CONFIG package ------------------------------------------------------------------
find_package(sentencepiece CONFIG QUIET)
if(sentencepiece_FOUND)
  set(_spm_core "")
  set(_spm_train "")
  foreach(_spm_candidate sentencepiece::sentencepiece sentencepiece::sentencepiece-static sentencepiece sentencepiece-static)
    if(NOT _spm_core AND TARGET ${_spm_candidate})
      set(_spm_core ${_spm_candidate})
    endif()
  endforeach()
  foreach(_spm_candidate sentencepiece::sentencepiece_train sentencepiece::sentencepiece_train-static sentencepiece_train
          sentencepiece_train-static)
    if(NOT _spm_train AND TARGET ${_spm_candidate})
      set(_spm_train ${_spm_candidate})
    endif()
  endforeach()
  if(_spm_core AND _spm_train)
    add_library(SentencePiece::SentencePiece INTERFACE IMPORTED)
    set_target_properties(SentencePiece::SentencePiece PROPERTIES INTERFACE_LINK_LIBRARIES "${_spm_train};${_spm_core}")
    set(SentencePiece_VERSION "${sentencepiece_VERSION}")
    include(FindPackageHandleStandardArgs)
    find_package_handle_standard_args(SentencePiece
      REQUIRED_VARS sentencepiece_DIR
      VERSION_VAR SentencePiece_VERSION)
    unset(_spm_core)
    unset(_spm_train)
    unset(_spm_candidate)
    return()
  endif()
  unset(_spm_core)
  unset(_spm_train)
  unset(_spm_candidate)
endif()

# ---- 2. pkg-config hints, then a plain search ----------------------------------------------------
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(PC_SentencePiece QUIET sentencepiece)
endif()

find_path(SentencePiece_INCLUDE_DIR
  NAMES sentencepiece_processor.h
  HINTS ${PC_SentencePiece_INCLUDEDIR} ${PC_SentencePiece_INCLUDE_DIRS})
find_library(SentencePiece_LIBRARY
  NAMES sentencepiece
  HINTS ${PC_SentencePiece_LIBDIR} ${PC_SentencePiece_LIBRARY_DIRS})
find_library(SentencePiece_TRAIN_LIBRARY
  NAMES sentencepiece_train
  HINTS ${PC_SentencePiece_LIBDIR} ${PC_SentencePiece_LIBRARY_DIRS})
mark_as_advanced(SentencePiece_INCLUDE_DIR SentencePiece_LIBRARY SentencePiece_TRAIN_LIBRARY)

if(PC_SentencePiece_VERSION)
  set(SentencePiece_VERSION "${PC_SentencePiece_VERSION}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(SentencePiece
  REQUIRED_VARS SentencePiece_LIBRARY SentencePiece_TRAIN_LIBRARY SentencePiece_INCLUDE_DIR
  VERSION_VAR SentencePiece_VERSION)

if(SentencePiece_FOUND)
  if(NOT TARGET SentencePiece::sentencepiece)
    add_library(SentencePiece::sentencepiece UNKNOWN IMPORTED)
    set_target_properties(SentencePiece::sentencepiece PROPERTIES
      IMPORTED_LOCATION "${SentencePiece_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${SentencePiece_INCLUDE_DIR}")
    # A static libsentencepiece also needs what its .pc lists privately (protobuf-lite, absl,
    # threads); pkg-config --static reports it.
    if(SentencePiece_LIBRARY MATCHES "\\${CMAKE_STATIC_LIBRARY_SUFFIX}$" AND PC_SentencePiece_STATIC_LDFLAGS)
      set_property(TARGET SentencePiece::sentencepiece APPEND PROPERTY INTERFACE_LINK_LIBRARIES ${PC_SentencePiece_STATIC_LDFLAGS})
    endif()
  endif()
  if(NOT TARGET SentencePiece::sentencepiece_train)
    add_library(SentencePiece::sentencepiece_train UNKNOWN IMPORTED)
    set_target_properties(SentencePiece::sentencepiece_train PROPERTIES
      IMPORTED_LOCATION "${SentencePiece_TRAIN_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${SentencePiece_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES SentencePiece::sentencepiece)  # the trainer calls into the runtime
  endif()
  add_library(SentencePiece::SentencePiece INTERFACE IMPORTED)
  set_target_properties(SentencePiece::SentencePiece PROPERTIES
    INTERFACE_LINK_LIBRARIES "SentencePiece::sentencepiece_train;SentencePiece::sentencepiece")
endif()
