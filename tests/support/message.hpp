// message_of: the text of the cerberus::Error a call throws. Its own header (reference.hpp
// includes it) so tests of light headers need not compile all of cerberus.hpp to use it.
#pragma once

#include <string>

#include "cerberus/core/error.hpp"

namespace cerberus::testing_support {

// The message of the cerberus::Error that fn throws, or "(no exception)".
template <class Fn>
std::string message_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace cerberus::testing_support
