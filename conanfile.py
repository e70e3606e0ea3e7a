"""Conan 2 recipe for cerberus, a header-only C++20 library.

    conan create . -pr:a packaging/conan/profiles/debian12 --build=missing
    conan create . -pr:a packaging/conan/profiles/debian12 -o "cerberus/*:with_tokenizer=True"

The package holds the headers plus cerberus' own CMake package (share/cmake/cerberus) and
pkg-config file (share/pkgconfig/cerberus.pc). CMake consumers use that config through
find_package(cerberus CONFIG REQUIRED [COMPONENTS tokenizer cuda]); CMakeDeps generates nothing
for cerberus itself (cmake_find_mode "none"), the package's config directory is put on
CMAKE_PREFIX_PATH by CMakeToolchain (builddirs).

The package contents do not depend on the options (every component's targets file is always
installed; a component checks its dependency when it is requested), hence package_id() clears
everything and one package serves all configurations. The options only add requirements:
with_tokenizer -> sentencepiece (not on ConanCenter: use [platform_requires] or your own recipe),
with_cuda -> the CUDA toolkit installed on the system (no Conan package).
"""
import os
import re

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy, load

required_conan_version = ">=2.0"


class CerberusConan(ConanFile):
    name = "cerberus"
    description = "Header-only C++20 library for multi-task instruction learning"
    license = "MIT"
    topics = ("machine-learning", "tensor", "expression-templates", "simd", "cuda", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {
        "with_tokenizer": [True, False],
        "with_cuda": [True, False],
    }
    default_options = {
        "with_tokenizer": False,
        "with_cuda": False,
    }
    exports_sources = "CMakeLists.txt", "cmake/*", "include/*", "LICENSE*"
    no_copy_source = True

    def set_version(self):
        # Single source of truth: project(cerberus VERSION x.y.z) in CMakeLists.txt.
        text = load(self, os.path.join(self.recipe_folder, "CMakeLists.txt"))
        match = re.search(r"project\(\s*cerberus\s+VERSION\s+([0-9.]+)", text)
        self.version = self.version or match.group(1)

    def layout(self):
        cmake_layout(self)

    def requirements(self):
        # Eigen and xsimd are used by the headers: header-library requirements are transitive.
        self.requires("eigen/3.4.0")
        self.requires("xsimd/[>=8.1.0 <14]")  # the headers handle both the xsimd 8 and the >= 9 API
        if self.options.with_tokenizer:
            self.requires("sentencepiece/[>=0.1.97 <1]")

    def package_id(self):
        self.info.clear()

    def validate(self):
        if self.settings.compiler.get_safe("cppstd"):
            check_min_cppstd(self, 20)

    def generate(self):
        tc = CMakeToolchain(self)
        tc.cache_variables["CERBERUS_BUILD_TESTS"] = False
        tc.cache_variables["CERBERUS_BUILD_EXAMPLES"] = False
        tc.cache_variables["CERBERUS_BUILD_BENCHMARKS"] = False
        tc.cache_variables["CERBERUS_BUILD_DOCS"] = False
        tc.cache_variables["CERBERUS_NATIVE_ARCH"] = False
        tc.cache_variables["CERBERUS_CUDA"] = "OFF"
        tc.cache_variables["CERBERUS_INSTALL"] = True
        # The package is the same with or without SentencePiece; do not depend on what the build
        # machine happens to have.
        tc.cache_variables["CMAKE_DISABLE_FIND_PACKAGE_SentencePiece"] = True
        tc.generate()
        CMakeDeps(self).generate()

    def build(self):
        # Nothing to compile: configuring generates the CMake package and cerberus.pc.
        cmake = CMake(self)
        cmake.configure()

    def package(self):
        copy(self, "LICENSE*", src=self.source_folder, dst=os.path.join(self.package_folder, "licenses"))
        copy(self, "*", src=os.path.join(self.source_folder, "include"), dst=os.path.join(self.package_folder, "include"))
        # share/cmake/cerberus and share/pkgconfig/cerberus.pc (the install copies the headers too,
        # the same files).
        CMake(self).install()

    def package_info(self):
        # CMake: cerberus' own config, found through CMAKE_PREFIX_PATH.
        self.cpp_info.set_property("cmake_find_mode", "none")
        self.cpp_info.set_property("cmake_file_name", "cerberus")
        self.cpp_info.set_property("pkg_config_name", "cerberus")

        # For the other generators (PkgConfigDeps, MSBuildDeps, ...), the same components.
        core = self.cpp_info.components["core"]
        core.set_property("cmake_target_name", "cerberus::cerberus")
        core.builddirs = [os.path.join("share", "cmake", "cerberus")]
        core.bindirs = []
        core.libdirs = []
        core.resdirs = []
        core.requires = ["eigen::eigen", "xsimd::xsimd"]
        if self.settings.os in ("Linux", "FreeBSD"):
            core.system_libs = ["pthread", "m"]

        if self.options.with_tokenizer:
            tokenizer = self.cpp_info.components["tokenizer"]
            tokenizer.set_property("cmake_target_name", "cerberus::tokenizer")
            tokenizer.bindirs = []
            tokenizer.libdirs = []
            tokenizer.resdirs = []
            tokenizer.includedirs = []
            tokenizer.requires = ["core", "sentencepiece::sentencepiece"]

        if self.options.with_cuda:
            cuda = self.cpp_info.components["cuda"]
            cuda.set_property("cmake_target_name", "cerberus::cuda")
            cuda.bindirs = []
            cuda.libdirs = []
            cuda.resdirs = []
            cuda.includedirs = []
            cuda.requires = ["core"]
            cuda.system_libs = ["cudart", "cublas"]  # from the system CUDA toolkit
