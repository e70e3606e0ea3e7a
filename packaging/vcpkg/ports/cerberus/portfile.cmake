# Overlay port for cerberus, a header-only library. From a checkout of the repository:
#
#   vcpkg install "cerberus[tokenizer,cuda]" --overlay-ports=<repository>/packaging/vcpkg/ports
#
# The source is the repository this port sits in (four directories up), or the directory named by
# the environment variable CERBERUS_SOURCE_DIR. The installed files are the same whatever the
# features: a feature only brings the dependency its component needs (sentencepiece, cuda), and
# find_package(cerberus COMPONENTS ...) checks that dependency on the consumer's side.
if(DEFINED ENV{CERBERUS_SOURCE_DIR})
    file(REAL_PATH "$ENV{CERBERUS_SOURCE_DIR}" SOURCE_PATH)
else()
    get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../../../.." ABSOLUTE)
endif()
if(NOT EXISTS "${SOURCE_PATH}/include/cerberus/cerberus.hpp")
    message(FATAL_ERROR "cerberus: no cerberus source tree at ${SOURCE_PATH}; set CERBERUS_SOURCE_DIR")
endif()

set(VCPKG_BUILD_TYPE release) # header-only: one configuration is enough

# Nothing is compiled: tests, examples, benchmarks and docs are off, CUDA and SentencePiece are not
# looked for at build time (the package exports all components regardless).
vcpkg_cmake_configure(
    SOURCE_PATH "${SOURCE_PATH}"
    OPTIONS
        -DCERBERUS_BUILD_TESTS=OFF
        -DCERBERUS_BUILD_EXAMPLES=OFF
        -DCERBERUS_BUILD_BENCHMARKS=OFF
        -DCERBERUS_BUILD_DOCS=OFF
        -DCERBERUS_NATIVE_ARCH=OFF
        -DCERBERUS_CUDA=OFF
        -DCERBERUS_INSTALL=ON
        -DCMAKE_DISABLE_FIND_PACKAGE_SentencePiece=ON
)
vcpkg_cmake_install()

# share/cmake/cerberus -> share/cerberus (FindSentencePiece.cmake and cerberusDependencies.cmake
# move along; the config includes them from its own directory).
vcpkg_cmake_config_fixup(CONFIG_PATH share/cmake/cerberus)
vcpkg_fixup_pkgconfig()

# Header-only: no libraries, no debug tree.
file(REMOVE_RECURSE
    "${CURRENT_PACKAGES_DIR}/debug"
    "${CURRENT_PACKAGES_DIR}/lib"
    "${CURRENT_PACKAGES_DIR}/share/cmake")

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
if(NOT EXISTS "${SOURCE_PATH}/LICENSE")
    message(FATAL_ERROR "cerberus: ${SOURCE_PATH}/LICENSE is missing; vcpkg installs it as the port's copyright file")
endif()
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
