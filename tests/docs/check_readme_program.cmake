# Fails unless the first ```cpp block of README.md is exactly examples/readme_first_program.cpp
# (after that file's first comment line), so the README shows a program CI compiles.
# Usage: cmake -DREADME=... -DPROGRAM=... -P check_readme_program.cmake
file(READ "${README}" readme)
string(FIND "${readme}" "```cpp\n" start)
if(start EQUAL -1)
  message(FATAL_ERROR "${README}: no ```cpp block found")
endif()
math(EXPR start "${start} + 7")
string(SUBSTRING "${readme}" ${start} -1 rest)
string(FIND "${rest}" "```" stop)
string(SUBSTRING "${rest}" 0 ${stop} block)
file(READ "${PROGRAM}" program)
string(FIND "${program}" "\n" first_newline)
math(EXPR first_newline "${first_newline} + 1")
string(SUBSTRING "${program}" ${first_newline} -1 body)
if(NOT block STREQUAL body)
  message(FATAL_ERROR "README.md's first program differs from ${PROGRAM}; update one to match the other")
endif()
