"""Conan 2 test package for cerberus: builds and runs a small program against the created package,
through cerberus' own CMake config (and its tokenizer component when with_tokenizer=True)."""
import os

from conan import ConanFile
from conan.tools.build import can_run
from conan.tools.cmake import CMake, cmake_layout


class CerberusTestConan(ConanFile):
    settings = "os", "arch", "compiler", "build_type"
    generators = "CMakeDeps", "CMakeToolchain", "VirtualRunEnv"
    test_type = "explicit"

    def requirements(self):
        self.requires(self.tested_reference_str)

    def layout(self):
        cmake_layout(self)

    def build(self):
        cmake = CMake(self)
        with_tokenizer = bool(self.dependencies["cerberus"].options.with_tokenizer)
        cmake.configure(variables={"CERBERUS_TEST_TOKENIZER": with_tokenizer})
        cmake.build()

    def test(self):
        if can_run(self):
            self.run(os.path.join(self.cpp.build.bindir, "test_package"), env="conanrun")
