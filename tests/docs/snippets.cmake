# Every ```cpp block of the documentation is a complete program that CI compiles and runs.
#
# cerberus_add_doc_snippets(<page.md> [LINK <targets>...]) extracts each ```cpp block of the page
# into <build>/doc_snippets/<page>_<n>.cpp, builds it as `doc_<page>_<n>` and adds a ctest of the
# same name. When the block is followed (blank lines only in between) by a ```text block, that
# block is the program's exact expected standard output, and the test fails on any difference.
# A block without `main(` is a configure error: documentation shows whole programs, so a reader
# can copy any of them and build it.

set(CERBERUS_DOC_SNIPPET_DIR ${CMAKE_CURRENT_BINARY_DIR}/doc_snippets)

function(cerberus_add_doc_snippets page)
  cmake_parse_arguments(ARG "" "" "LINK" ${ARGN})
  get_filename_component(stem ${page} NAME_WE)
  string(TOLOWER "${stem}" stem)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${page})
  file(READ ${page} text)
  set(index 0)
  while(TRUE)
    string(FIND "${text}" "```cpp\n" start)
    if(start EQUAL -1)
      break()
    endif()
    math(EXPR index "${index} + 1")
    math(EXPR start "${start} + 7")
    string(SUBSTRING "${text}" ${start} -1 text)
    string(FIND "${text}" "```" stop)
    if(stop EQUAL -1)
      message(FATAL_ERROR "${page}: ```cpp block ${index} is never closed")
    endif()
    string(SUBSTRING "${text}" 0 ${stop} code)
    math(EXPR stop "${stop} + 3")
    string(SUBSTRING "${text}" ${stop} -1 text)
    string(FIND "${code}" "main(" has_main)
    if(has_main EQUAL -1)
      message(FATAL_ERROR "${page}: ```cpp block ${index} has no main(); documentation shows whole programs")
    endif()

    # An expected-output block: ```text right after the code, blank lines allowed in between.
    set(expected "")
    set(has_expected FALSE)
    if(text MATCHES "^[\n ]*```text\n")
      string(FIND "${text}" "```text\n" open)
      math(EXPR open "${open} + 8")
      string(SUBSTRING "${text}" ${open} -1 after)
      string(FIND "${after}" "```" close)
      string(SUBSTRING "${after}" 0 ${close} expected)
      set(has_expected TRUE)
    endif()

    set(name doc_${stem}_${index})
    set(source ${CERBERUS_DOC_SNIPPET_DIR}/${name}.cpp)
    # Written only when changed, so editing one page does not rebuild every snippet.
    file(WRITE ${source}.in "${code}")
    configure_file(${source}.in ${source} COPYONLY)
    # Blocks that use the SentencePiece component link it, and are left out where it is not built.
    set(link ${ARG_LINK})
    string(FIND "${code}" "cerberus/tokenizer" uses_tokenizer)
    if(NOT uses_tokenizer EQUAL -1)
      if(NOT TARGET cerberus::tokenizer)
        continue()
      endif()
      list(APPEND link cerberus::tokenizer)
    endif()
    add_executable(${name} ${source})
    target_link_libraries(${name} PRIVATE cerberus::cerberus cerberus_dev_flags ${link})
    if(has_expected)
      file(WRITE ${CERBERUS_DOC_SNIPPET_DIR}/${name}.expected "${expected}")
      add_test(NAME ${name}
               COMMAND ${CMAKE_COMMAND} -DPROGRAM=$<TARGET_FILE:${name}>
                       -DEXPECTED=${CERBERUS_DOC_SNIPPET_DIR}/${name}.expected
                       -DPAGE=${page} -DBLOCK=${index}
                       -P ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/check_output.cmake)
    else()
      add_test(NAME ${name} COMMAND ${name})
    endif()
  endwhile()
endfunction()
