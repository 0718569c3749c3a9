# Copies hooks/python (kvcached_boot: the interpreter-start injection; kvcached_hook: the engine
# hooks) next to the shim, as ${CMAKE_LIBRARY_OUTPUT_DIRECTORY}/kvcached_python, which is where
# the shim looks for it (dladdr of itself; KVCACHED_PYTHON_DIR overrides). The files are
# byte-compiled here so that the first interpreter start writes no __pycache__ beside the
# library. Target: kvcached_python (built by ALL). Include once, from any CMakeLists.txt.
include_guard(GLOBAL)

find_package(Python3 COMPONENTS Interpreter)
set(KVCACHED_PYTHON_SRC ${PROJECT_SOURCE_DIR}/hooks/python)
set(KVCACHED_PYTHON_OUT ${CMAKE_LIBRARY_OUTPUT_DIRECTORY}/kvcached_python)
file(GLOB_RECURSE kvcached_python_sources CONFIGURE_DEPENDS
     ${KVCACHED_PYTHON_SRC}/kvcached_boot/*.py ${KVCACHED_PYTHON_SRC}/kvcached_hook/*.py)
set(kvcached_python_outputs "")
foreach(src ${kvcached_python_sources})
  file(RELATIVE_PATH rel ${KVCACHED_PYTHON_SRC} ${src})
  if(rel MATCHES "__pycache__")
    continue()
  endif()
  add_custom_command(OUTPUT ${KVCACHED_PYTHON_OUT}/${rel}
    COMMAND ${CMAKE_COMMAND} -E copy ${src} ${KVCACHED_PYTHON_OUT}/${rel}
    DEPENDS ${src} COMMENT "kvcached_python/${rel}" VERBATIM)
  list(APPEND kvcached_python_outputs ${KVCACHED_PYTHON_OUT}/${rel})
endforeach()
set(kvcached_python_stamp ${CMAKE_CURRENT_BINARY_DIR}/kvcached_python.stamp)
if(Python3_Interpreter_FOUND)
  add_custom_command(OUTPUT ${kvcached_python_stamp}
    COMMAND ${Python3_EXECUTABLE} -m compileall -q ${KVCACHED_PYTHON_OUT}
    COMMAND ${CMAKE_COMMAND} -E touch ${kvcached_python_stamp}
    DEPENDS ${kvcached_python_outputs} VERBATIM)
else()
  add_custom_command(OUTPUT ${kvcached_python_stamp}
    COMMAND ${CMAKE_COMMAND} -E touch ${kvcached_python_stamp}
    DEPENDS ${kvcached_python_outputs} VERBATIM)
endif()
add_custom_target(kvcached_python ALL DEPENDS ${kvcached_python_stamp})
