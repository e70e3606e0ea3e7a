// Reading a whole file, with errors that name the file, the operation that wanted it and what the
// file should have been. (Bytes are returned as they are: it serves binary files too.)
#pragma once

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>

#include "cerberus/core/error.hpp"

namespace cerberus::data {

// The file's bytes. `op` names the caller in the error ("[read_ddtp] cannot open ...") and
// `expected` says what the file should be ("a Debian Translation file").
inline std::string read_text_file(const std::filesystem::path& path, const std::string& op, const std::string& expected) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw FileError("[" + op + "] '" + path.string() + "' does not exist (expected " + expected + ")");
  if (std::filesystem::is_directory(path, ec))
    throw FileError("[" + op + "] '" + path.string() + "' is a directory (expected " + expected + ")");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError("[" + op + "] cannot open '" + path.string() + "' (expected " + expected + ")");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw FileError("[" + op + "] reading '" + path.string() + "' failed");
  return bytes;
}

}  // namespace cerberus::data
