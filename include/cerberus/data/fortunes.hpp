// The fortune(6) file format (Debian `fortunes`): entries separated by lines holding only "%".
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "cerberus/data/sentences.hpp"
#include "cerberus/data/text_file.hpp"

namespace cerberus::data {

// The entries of a fortune file, each trimmed of surrounding whitespace (inner line breaks kept);
// empty entries are dropped.
inline std::vector<std::string> parse_fortunes(std::string_view text) {
  std::vector<std::string> out;
  std::size_t begin = 0;  // start of the current entry
  std::size_t pos = 0;
  auto flush = [&](std::size_t end) {
    const std::string_view entry = text_detail::trim(text.substr(begin, end - begin));
    if (!entry.empty()) out.emplace_back(entry);
  };
  while (pos <= text.size()) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line == "%") {
      flush(pos);
      begin = nl + 1;
    }
    pos = nl + 1;
  }
  if (begin < text.size()) flush(text.size());
  return out;
}

inline std::vector<std::string> read_fortunes(const std::filesystem::path& path) {
  return parse_fortunes(read_text_file(path, "read_fortunes", "a fortune file ('%'-separated entries)"));
}

}  // namespace cerberus::data
