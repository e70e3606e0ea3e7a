# Runs PROGRAM and fails unless its standard output is exactly the text in EXPECTED (the ```text
# block that follows ```cpp block BLOCK of PAGE).
execute_process(COMMAND ${PROGRAM} OUTPUT_VARIABLE actual RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "${PAGE} block ${BLOCK}: the program exited with ${status}")
endif()
file(READ ${EXPECTED} expected)
if(NOT actual STREQUAL expected)
  message(FATAL_ERROR "${PAGE} block ${BLOCK}: output differs from the page.\n--- page says:\n${expected}--- program printed:\n${actual}")
endif()
